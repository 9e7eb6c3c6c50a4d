"""scannernet_ros: on-board, line-by-line cloud segmentation of push-broom imagery with ScannerNet."""

__version__ = "0.1.0"
