"""bpe-lm: raw text to a trained language model.

The tokenizer (``train_bpe``, ``Tokenizer``) needs only numpy; the model and training modules
(``bpe_lm.model``, ``bpe_lm.optim``, ``bpe_lm.train`` ...) need PyTorch and are imported on use.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bpe-lm")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from bpe_lm.errors import BpeLmError  # noqa: E402
from bpe_lm.tokenizer import GPT2_PATTERN, Tokenizer, train_bpe  # noqa: E402

__all__ = ["GPT2_PATTERN", "BpeLmError", "Tokenizer", "train_bpe", "__version__"]
