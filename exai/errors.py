"""The root of every error exai raises on purpose.

`except ExaiError` catches what exai itself refuses or reports (configuration, store, provider,
protocol errors); anything else reaching a fault boundary is a bug and is logged as one.
"""

from __future__ import annotations


class ExaiError(Exception):
    """An error exai raises on purpose; `str(error)` is a sentence a user can act on."""
