"""Learning: the torch networks, their training and the datasets they learn from.

Nothing on board imports this package on the CPU: the segmenter reads weights with numpy and steps
them with :mod:`scannernet_ros.stepper`.  It is loaded for training, for CUDA and for the
whole-image models.
"""
