"""The search page's query string (``/?q=...&k=...&mode=...&page=N``), validated into a :class:`PageQuery`.

Bad values raise :class:`PageError`, which the page renders as a 400 page that names the parameter; every
valid query round-trips through :meth:`PageQuery.params`, so each result page has a shareable URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from lsr.search.pipeline import DEFAULT_FUSION

__all__ = ["PageError", "PageQuery", "parse_page_query", "MODES", "PLACEMENTS", "MAX_PAGE_K"]

MODES = ("sparse", "dense", "hybrid")
PLACEMENTS = ("after", "before", "both")
MAX_PAGE_K = 100  # hits per page; deeper pages are reached by paging, up to the service's max_k


class PageError(Exception):
    """A problem to show the user as an HTML page with this status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class PageQuery:
    q: str = ""
    k: int = 10
    page: int = 1
    mode: str = "sparse"
    alpha: float = DEFAULT_FUSION["alpha"]  # convex fusion weight on the sparse side (hybrid only): the default's
    prf: bool = False
    placement: str = "after"  # where PRF sits relative to fusion (hybrid only)

    @property
    def depth(self) -> int:
        """How many hits to retrieve so that this page can be cut out of them."""
        return self.k * self.page

    @property
    def plain_sparse(self) -> bool:
        """Plain sparse search, the one whose scores explanations sum to."""
        return self.mode == "sparse" and not self.prf

    def pipeline_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"retriever": self.mode}
        if self.mode == "hybrid":
            config["fusion"] = {"method": "convex", "alpha": self.alpha}
        if self.prf:
            config["prf"] = {"placement": self.placement} if self.mode == "hybrid" else {}
        return config

    def params(self, **changes: Any) -> dict[str, Any]:
        """URL parameters reproducing this query (defaults left out, so shared URLs stay short)."""
        values = {"q": self.q, "k": self.k, "mode": self.mode, "page": self.page, **changes}
        if values["mode"] == "hybrid":
            values["alpha"] = self.alpha
        if self.prf:
            values["prf"] = "on"
            if values["mode"] == "hybrid":
                values["placement"] = self.placement
        if values["page"] == 1:
            del values["page"]
        return values


def _int(args: MultiDict, name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PageError(400, f"{name} must be a whole number between {lo} and {hi}, got {raw[:40]!r}.") from None
    if not lo <= value <= hi:
        raise PageError(400, f"{name} must be between {lo} and {hi}, got {value}.")
    return value


def _choice(args: MultiDict, name: str, choices: tuple[str, ...]) -> str:
    value = args.get(name, "").strip() or choices[0]
    if value not in choices:
        raise PageError(400, f"{name} must be one of {', '.join(choices)}, got {value[:40]!r}.")
    return value


def parse_page_query(args: MultiDict, max_k: int, max_chars: int) -> PageQuery:
    q = args.get("q", "").strip()
    if len(q) > max_chars:
        raise PageError(400, f"the query is limited to {max_chars} characters, got {len(q)}.")
    k = _int(args, "k", 10, 1, min(MAX_PAGE_K, max_k))
    page = _int(args, "page", 1, 1, max(1, max_k // k))
    mode = _choice(args, "mode", MODES)
    raw_alpha = args.get("alpha", "").strip()
    alpha = DEFAULT_FUSION["alpha"]
    if raw_alpha:
        try:
            alpha = float(raw_alpha)
        except ValueError:
            alpha = -1.0
        if not 0.0 <= alpha <= 1.0:  # also rejects nan
            raise PageError(400, f"alpha must be a number between 0 and 1, got {raw_alpha[:40]!r}.")
    prf_raw = args.get("prf", "").strip().lower()
    if prf_raw not in ("", "on", "off", "1", "0", "true", "false"):
        raise PageError(400, f"prf must be on or off, got {prf_raw[:40]!r}.")
    placement = _choice(args, "placement", PLACEMENTS)
    return PageQuery(q, k, page, mode, alpha, prf_raw in ("on", "1", "true"), placement)
