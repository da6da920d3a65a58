# -*- test-case-name: tests.protocol.test_respond -*-
"""
The response a held long-poll gets when an C{http-response} item is published to it (pure).

Pushpin builds it from two sources (reference §5.3, §6.1, §14.3, §14.4): the hold's own
instruct/timeout response and the published format. The status comes from the publish alone
(default C{200 OK}; the hold's C{Grip-Status} only applies to the timeout response); the
headers are the hold's minus any name the publish supplies, then the publish's own, then,
a quirk of 1.36 that we mirror, every name listed in a published C{Grip-Expose-Headers} is
I{removed}; C{Content-Length} is left to the caller. The body is the published one, or the
hold's JSON body with the published C{body-patch} applied.

That patch is not RFC 6902: Pushpin 1.36 has its own JSON Patch/Pointer code
(C{src/handler/jsonpatch.cpp}, C{jsonpointer.cpp}) and its quirks are observable, so it is
ported here instead of using the C{jsonpatch} library. Observed on 1.36.0 and kept:

  - C{"/"} is the whole document and C{""} is an error (RFC: the reverse);
  - an array index must name an existing element (C{"-"} appends); C{add} at an index
    I{replaces} that element instead of inserting before it; indexes may carry spaces or C{+};
  - C{test} compares numbers, booleans and numeric strings as rounded 32-bit integers
    (C{1.4} equals C{1}, C{"1"} equals C{1}, C{true} equals C{1}) and C{null} never equals
    anything, not even C{null};
  - the hold body must be a JSON object or array and so must the result; it is written back
    the way Qt writes JSON: compact, object keys sorted, numbers in Qt's shortest form
    (C{1.0} is C{1}, C{1e20} is C{1e+20}, C{1e-7} is C{1e-07}), and the hold body's trailing
    C{\\n} or C{\\r\\n}, if any, is kept.

Any failure raises L{RespondError}; the hold then answers C{502} (§6.1).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

from pushpin_tx.protocol.headers import Headers
from pushpin_tx.protocol.qt.jsonvalues import dumps_json, loads_json
from pushpin_tx.protocol.qt.numbers import string_to_int, variant_to_int
from pushpin_tx.protocol.qt.strings import from_utf8
from pushpin_tx.protocol.grip import reason_phrase
from pushpin_tx.protocol.items import HttpResponseFormat

__all__ = ["RespondError", "merge_response", "standard_reason"]


class RespondError(Exception):
    """The published response cannot be built (a failed C{body-patch}): the hold gets a 502."""


def standard_reason(code: int) -> bytes:
    """Pushpin's reason phrase for C{code} (C{b"Undefined Reason"} for codes it does not know)."""
    return reason_phrase(code)


def merge_response(
    hold_code: int,
    hold_reason: bytes,
    hold_headers: Sequence[tuple[bytes, bytes]],
    hold_body: bytes,
    fmt: HttpResponseFormat,
) -> tuple[int, bytes, Headers, bytes]:
    """
    Build C{(code, reason, headers, body)} for a response hold that receives C{fmt} (a
    C{send}; hints and closes are the caller's business). C{hold_code} and C{hold_reason}
    are accepted for symmetry but deliberately unused: a publish without C{code} gets
    C{200 OK} even when the hold's instruct carried C{Grip-Status} (observed on 1.36.0).
    The headers never include C{Content-Length}. Raises L{RespondError} when a
    C{body-patch} cannot be applied.
    """
    del hold_code, hold_reason  # see the docstring
    published = list(fmt.headers)
    supplied = {name.lower() for name, _ in published}
    headers = [(n, v) for n, v in hold_headers if n.lower() not in supplied]
    headers.extend(published)
    if fmt.expose_headers:
        hidden = {name.lower() for name in fmt.expose_headers}
        headers = [(n, v) for n, v in headers if n.lower() not in hidden]
    headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]

    body = fmt.body if fmt.body_patch is None else _patched_body(hold_body, fmt.body_patch)
    reason = fmt.reason if fmt.reason else standard_reason(fmt.code)
    return fmt.code, reason, headers, body


def _patched_body(hold_body: bytes, ops: Sequence[Any]) -> bytes:
    try:
        document = loads_json(hold_body)
    except ValueError:
        raise RespondError("failed to parse original response body as JSON") from None
    try:
        result = _apply_patch(document, ops)
        if not isinstance(result, (dict, list)):
            raise _PatchError("patched document is not an object or array")
        out = dumps_json(result)
    except (_PatchError, ValueError) as e:
        raise RespondError(f"failed to apply JSON patch: {e}") from None
    except RecursionError:
        raise RespondError("failed to apply JSON patch: document nested too deeply") from None
    if hold_body.endswith(b"\r\n"):
        out += b"\r\n"
    elif hold_body.endswith(b"\n"):
        out += b"\n"
    return out


# --- Pushpin's JSON Patch --------------------------------------------------------------------


class _PatchError(Exception):
    """A patch operation failed; the text is Pushpin's debug message."""


#: What a lookup of a location that does not exist yields (Qt's invalid QVariant).
_MISSING: Any = object()

#: One reference step: ("obj", key) or ("arr", index); index -1 is "-" (append). The second
#: item is Any: the code tells str from int by the tag, which mypy does not narrow on.
_Ref = tuple[str, Any]

def _apply_patch(document: Any, ops: Sequence[Any]) -> Any:
    """C{JsonPatch::patch}: apply C{ops} to C{document} (modified in place); return the result."""
    box = [document]  # the root lives in a box so that "/" can be replaced
    for op in ops:
        if not isinstance(op, dict):
            raise _PatchError("invalid op")
        kind = _op_string(op, "op")
        path = _op_string(op, "path")
        refs: list[_Ref] = [] if kind == "move" else _resolve(box, path)
        if kind == "add":
            _set(box, refs, copy.deepcopy(_op_value(op)))
        elif kind == "remove":
            if not _exists(box, refs) or not _remove(box, refs):
                raise _PatchError("location does not exist")
        elif kind == "replace":
            value = _op_value(op)
            if not _exists(box, refs):
                raise _PatchError("location does not exist")
            _set(box, refs, copy.deepcopy(value))
        elif kind == "move":
            source = _op_string(op, "from")
            if _is_within(path, source):
                raise _PatchError("cannot move location into itself")
            from_refs = _resolve(box, source)
            if not _exists(box, from_refs):
                raise _PatchError("location does not exist")
            # Taking the root leaves it in place, hence the copy.
            value = _take(box, from_refs) if from_refs else copy.deepcopy(box[0])
            _set(box, _resolve(box, path), value)
        elif kind == "copy":
            from_refs = _resolve(box, _op_string(op, "from"))
            if not _exists(box, from_refs):
                raise _PatchError("location does not exist")
            _set(box, _resolve(box, path), copy.deepcopy(_value(box, from_refs)))
        elif kind == "test":
            if not _qt_equal(_value(box, refs), _op_value(op)):
                raise _PatchError("tested values are not equal")
        else:
            raise _PatchError(f"unsupported op: {kind}")
    return box[0]


def _op_string(op: dict[str, Any], key: str) -> str:
    if key not in op:
        raise _PatchError(f"op does not contain '{key}'")
    value = op[key]
    if isinstance(value, bytes):
        return from_utf8(value)
    if not isinstance(value, str):
        raise _PatchError(f"op contains '{key}' with wrong type")
    return value


def _op_value(op: dict[str, Any]) -> Any:
    if "value" not in op:
        raise _PatchError("op does not contain 'value'")
    return op["value"]


def _resolve(box: list[Any], pointer: str) -> list[_Ref]:
    """C{JsonPointer::resolve}: every step but the last must exist; the last may be new."""
    if not pointer.startswith("/"):
        raise _PatchError("pointer must start with /")
    refs: list[_Ref] = []
    if pointer == "/":
        return refs
    node = box[0]
    for part in pointer.split("/")[1:]:
        if not part:
            raise _PatchError("reference cannot be empty")
        name = part.replace("~1", "/").replace("~0", "~")
        if refs:
            kind, key = refs[-1]
            if kind == "obj":
                if key not in node:
                    raise _PatchError(f"cannot step into undefined reference: key={key}")
            elif not 0 <= key < len(node):
                raise _PatchError(f"cannot step into undefined reference: index={key}")
            node = node[key]
        if isinstance(node, dict):
            refs.append(("obj", name))
        elif isinstance(node, list):
            if name == "-":
                refs.append(("arr", -1))
                continue
            index = string_to_int(name)  # QString::toInt(&ok)
            if index is None:
                raise _PatchError("index must be an integer")
            if not 0 <= index < len(node):
                raise _PatchError("index out of range")
            refs.append(("arr", index))
        else:
            raise _PatchError("non-container value cannot have child reference")
    return refs


def _container(box: list[Any], refs: list[_Ref]) -> Any:
    """The container the last reference points into, or C{_MISSING} (C{ExecError})."""
    node = box[0]
    for kind, key in refs[:-1]:
        if kind == "obj":
            if not isinstance(node, dict) or key not in node:
                return _MISSING
        elif not isinstance(node, list) or not 0 <= key < len(node):
            return _MISSING
        node = node[key]
    kind = refs[-1][0]
    if (kind == "obj" and not isinstance(node, dict)) or (kind == "arr" and not isinstance(node, list)):
        return _MISSING
    return node


def _exists(box: list[Any], refs: list[_Ref]) -> bool:
    if not refs:
        return True
    node = _container(box, refs)
    if node is _MISSING:
        return False
    kind, key = refs[-1]
    return bool(key in node if kind == "obj" else 0 <= key < len(node))


def _value(box: list[Any], refs: list[_Ref]) -> Any:
    if not refs:
        return box[0]
    node = _container(box, refs)
    if node is _MISSING:
        return _MISSING
    kind, key = refs[-1]
    if kind == "obj":
        return node.get(key, _MISSING)
    return node[key] if 0 <= key < len(node) else _MISSING


def _remove(box: list[Any], refs: list[_Ref]) -> bool:
    if not refs:
        return False  # the root cannot be removed
    node = _container(box, refs)
    if node is _MISSING:
        return False
    kind, key = refs[-1]
    if kind == "obj":
        return node.pop(key, _MISSING) is not _MISSING
    if 0 <= key < len(node):
        del node[key]
        return True
    return False


def _take(box: list[Any], refs: list[_Ref]) -> Any:
    value = _value(box, refs)
    _remove(box, refs)
    return value


def _set(box: list[Any], refs: list[_Ref], value: Any) -> None:
    if not refs:
        box[0] = value
        return
    node = _container(box, refs)
    if node is _MISSING:
        return
    kind, key = refs[-1]
    if kind == "obj":
        node[key] = value
    elif key == -1:
        node.append(value)
    elif 0 <= key < len(node):
        node[key] = value


def _is_within(inner: str, outer: str) -> bool:
    """C{JsonPointer::isWithin}: whether C{inner} lies strictly below C{outer}."""
    if not outer.startswith("/") or not inner.startswith("/") or outer == inner:
        return False
    outer_parts = outer.split("/")[1:]
    inner_parts = inner.split("/")[1:]
    return len(outer_parts) < len(inner_parts) and inner_parts[: len(outer_parts)] == outer_parts


def _qt_equal(a: object, b: object) -> bool:
    """C{_compareJsonValues}: structural for containers, C{QVariant::toInt} for scalars."""
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(key in b and _qt_equal(value, b[key]) for key, value in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_qt_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, bool) and isinstance(b, bool):
        return a == b
    if a is _MISSING or b is _MISSING:
        return False
    x, y = variant_to_int(a), variant_to_int(b)
    return x is not None and y is not None and x == y
