"""Pure loss functions of tensors: no modules, no config (see docs/architecture.md)."""
from vlkit.objectives.itc import itc_loss, momentum_itc_loss
from vlkit.objectives.itm import in_batch_negatives, itm_labels, itm_loss
from vlkit.objectives.mae import mae_loss
from vlkit.objectives.mlm import LossOutput, classification_loss, distilled_mlm_loss, mlm_loss
from vlkit.objectives.qa import vqa_loss, vqa_targets
from vlkit.objectives.wpa import wpa_loss

__all__ = [
    "LossOutput", "classification_loss", "distilled_mlm_loss", "in_batch_negatives", "itc_loss", "itm_labels",
    "itm_loss", "mae_loss", "mlm_loss", "momentum_itc_loss", "vqa_loss", "vqa_targets", "wpa_loss",
]
