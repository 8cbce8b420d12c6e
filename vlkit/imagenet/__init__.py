"""ImageNet-1K fine-tuning of a (VLC / ViLT / MAE / timm) vision transformer: the reference's
``main_finetune.py`` (fact sheet vilt_vlc.md §8) rebuilt from timm and torchvision parts.

Modules, one job each: ``args`` (the command line), ``models`` (the timm ViT classifier),
``convert`` (pre-trained checkpoints into it), ``data`` (ImageFolder, transforms, loaders),
``recipe`` (lr, layer decay, schedule, mixup, loss), ``train`` (one epoch), ``evaluate``
(exact top-1 / top-5) and ``outputs`` (log.txt, metrics.jsonl, plot, checkpoints); the command line
that runs them is ``vlkit/cli/imagenet.py``.
"""
