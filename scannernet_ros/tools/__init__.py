"""Tools a person runs on the ground: the ``scannernet`` command (train, cv, evaluate, bench, export,
convert, demo) and what drives it.  Nodes and the on-board core never import from here."""
