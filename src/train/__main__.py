"""``python -m shopformer.train`` is ``shopformer-train``."""

from shopformer.train.train import main

main()
