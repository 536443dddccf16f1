"""Jinja's compile errors in parlour's words, at the offending token.

Jinja reports a syntax error by the line of the template only, in its own terms ("expected
token 'end of print statement', got 'nme'", "No filter named 'uper'."). An author wants to
know what is wrong and where: :func:`explain` rewords the error, finds the token it is about
in the template's text (its line and column there), and for an unknown filter or test says
which known one was probably meant. The compiler then maps that place into the flow file.

>>> explain("Hi {{ name | uper }}", "No filter named 'uper'.", 1, filters, tests)
Explained(message="unknown filter 'uper' (did you mean 'upper'?)", line=1, column=14)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_TAGS = ("if", "elif", "else", "endif", "for", "endfor", "set", "endset", "filter", "endfilter", "with", "endwith")
"""The statements a flow template may use (macros and call blocks are refused)."""


@dataclass(frozen=True, slots=True)
class Explained:
    message: str
    line: int | None
    column: int | None


def _close(name: str, known: Iterable[str]) -> str:
    found = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""


def _find(source: str, pattern: str, line: int | None, *, last: bool = False) -> tuple[int | None, int | None]:
    """(line, column) in ``source`` of the first (or last) match of ``pattern``'s group 1,
    preferring one on ``line``; (line, None) when there is none."""
    matches = list(re.finditer(pattern, source))
    on_line = [m for m in matches if source.count("\n", 0, m.start(1)) + 1 == line] if line else []
    chosen = (on_line or matches)[-1 if last else 0] if matches else None
    if chosen is None:
        return line, None
    return _position(source, chosen.start(1))


def _position(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _quoted(token: str) -> str:
    return re.escape(token) + (r"\b" if token[-1:].isalnum() or token[-1:] == "_" else "")


def explain(source: str, message: str, line: int | None, filters: Iterable[str],
            tests: Iterable[str], *, expression: bool = False) -> Explained:
    """``message`` (Jinja's, for ``source``, at template ``line``) reworded and positioned.
    With ``expression``, ``source`` is an expression wrapped in ``{{ }}`` that its author did
    not write, and the words leave the braces out."""
    for pattern, explainer in _EXPLAINERS:
        found = re.fullmatch(pattern, message, re.DOTALL)
        if found:
            explained = explainer(source, line, found, filters, tests)
            if expression:
                words = explained.message.replace(", or }}, is missing", " is missing").replace(
                    "something is missing before }}: the expression ends too soon", "the expression ends too soon")
                if words.startswith("unexpected '}'"):  # the braces it was wrapped in
                    words = words.replace("unexpected '}'", "the expression ends too soon", 1)
                return Explained(words, explained.line, explained.column)
            return explained
    return Explained(message, line, None)


def _filter(source, line, found, filters, tests):
    name = found.group(1)
    return Explained(f"unknown filter {name!r}{_close(name, filters)}",
                     *_find(source, r"\|\s*(" + _quoted(name) + ")", line))


def _test(source, line, found, filters, tests):
    name = found.group(1)
    return Explained(f"unknown test {name!r}{_close(name, tests)}",
                     *_find(source, r"\bis\s+(?:not\s+)?(" + _quoted(name) + ")", line))


def _got(source, line, found, filters, tests):
    token = found.group(2)
    where = _find(source, r"(?:\{\{|\{%)[^\n]*?\S\s*(" + _quoted(token) + ")", line)
    closer = "}}" if "print" in found.group(1) else "%}"
    return Explained(f"unexpected {token!r}: an operator, or {closer}, is missing before it", *where)


def _ends_early(source, line, found, filters, tests):
    closer = "}}" if "print" in found.group(1) else "%}"
    return Explained(f"something is missing before {closer}: the expression ends too soon",
                     *_find(source, r"(" + re.escape(closer) + ")", line))


def _unexpected(source, line, found, filters, tests):
    token, expected = found.group(1), found.group(2)
    hint = f": {expected!r} was expected first" if expected else ""
    token_pattern = r"\}+" if token == "}" else re.escape(token)  # `}` is the start of a `}}` or alone
    return Explained(f"unexpected {token!r}{hint}",
                     *_find(source, r"(?:\{\{|\{%)[^\n]*?(" + token_pattern + ")", line))


def _char(source, line, found, filters, tests):
    char, offset = found.group(2), int(found.group(3))
    what = "a quote that is never closed" if char in "'\"" else f"{char!r}, which no expression uses"
    return Explained(f"unexpected character: {what}", *_position(source, offset))


def _not_closed(source, line, found, filters, tests):
    closer = "}}" if "print" in found.group(1) else "%}"
    opener = "{{" if closer == "}}" else "{%"
    where = _find(source, "(" + re.escape(opener) + ")", None, last=True)
    return Explained(f"{opener} is not closed with {closer}", *where)


def _block_open(source, line, found, filters, tests):
    tag = found.group(2)
    return Explained(f"{{% {tag} %}} is not closed: add {{% end{tag} %}}",
                     *_find(source, r"\{%-?\s*(" + _quoted(tag) + ")", None, last=True))


def _unknown_tag(source, line, found, filters, tests):
    tag = found.group(1)
    if tag.startswith("end") or tag in ("elif", "else"):
        message = f"{{% {tag} %}} closes or continues no open block"
    else:
        message = f"unknown statement {{% {tag} %}}{_close(tag, _TAGS)}"
    return Explained(message, *_find(source, r"\{%-?\s*(" + _quoted(tag) + ")", line))


_EXPLAINERS = [
    (r"No filter named '(.+)'\.?", _filter),
    (r"No test named '(.+)'\.?", _test),
    (r"expected token '(end of print statement|end of statement block)', got '(.+)'", _got),
    (r"unexpected '(end of print statement|end of statement block)'", _ends_early),
    (r"unexpected end of template, expected '(end of print statement|end of statement block)'\.?", _not_closed),
    (r"Unexpected end of template\. Jinja was looking for the following tags: (.*?)\. "
     r"The innermost block that needs to be closed is '(\w+)'\.?", _block_open),
    (r"Encountered unknown tag '(\w+)'\..*", _unknown_tag),
    (r"unexpected char (['\"])(.)\1 at (\d+)", _char),
    (r"unexpected '([^']+)'(?:, expected '([^']+)')?", _unexpected),
]

