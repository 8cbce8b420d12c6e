"""Pure loss functions of tensors: no modules, no config (see docs/architecture.md)."""
from vlkit.objectives.itm import itm_labels, itm_loss
from vlkit.objectives.mae import mae_loss
from vlkit.objectives.mlm import LossOutput, mlm_loss
from vlkit.objectives.wpa import wpa_loss

__all__ = ["LossOutput", "itm_labels", "itm_loss", "mae_loss", "mlm_loss", "wpa_loss"]
