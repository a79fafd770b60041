"""One-line-per-epoch console output in the style of the PyTorch tutorials."""


def format_epoch(row: dict, total_epochs: int) -> str:
    """`Epoch 3/55 | train loss 0.552 acc 0.712 | val loss 0.609 acc 0.668 | lr 1e-04 | 41.2 s, 155 img/s`."""
    validation = f"val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.3f} | " if "val_loss" in row else ""
    return (
        f"Epoch {row['epoch']}/{total_epochs} | "
        f"train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.3f} | "
        f"{validation}"
        f"lr {row['lr']:.0e} | "
        f"{row['epoch_seconds']:.1f} s, {row['images_per_second']:.0f} img/s"
    )
