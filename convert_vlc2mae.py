#!/usr/bin/env python
"""`convert_vlc2mae.py --vlc_model CKPT --mae_model DIR`: the vision transformer of a VLC (or ViLT,
ALBEF, MAE, timm) checkpoint as `{"model": ...}` in `DIR/mae_modelckpt`, as VLC's script writes it.
Optional: `main_finetune.py --finetune` also reads the VLC checkpoint directly."""
import argparse
import logging

from vlkit.imagenet.convert import write_vision_checkpoint

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser("convert_vlc2mae.py")
    parser.add_argument("--vlc_model", required=True, help="VLC Lightning checkpoint")
    parser.add_argument("--mae_model", required=True, help="output folder")
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="allow full unpickling of a --vlc_model that holds more than tensors (trusted files only)")
    args = parser.parse_args()
    print(write_vision_checkpoint(args.vlc_model, args.mae_model, args.trust_checkpoint))
