"""The LLM Training workbook: measured experiments behind the lecture's claims.

Importing this package changes no global state: no seeds, no plot templates, no torch flags.
"""

from workbook.config import WorkbookError, resolve_preset

__all__ = ["WorkbookError", "resolve_preset", "__version__"]
__version__ = "0.1.0"
