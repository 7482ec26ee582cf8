"""The tools every PoolChat agent gets: a safe calculator and a clock."""

from __future__ import annotations

import ast
import operator
import threading
from datetime import datetime, timezone

from langchain_core.tools import tool

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 100
MAX_RESULT_BITS = 10_000  # about 3,000 digits: beyond, arithmetic on big integers holds
# the interpreter (every user waits), and ``(9**99)**99`` passes an exponent check alone


# Python 3.11 builds the objects of a parsed tree with one recursion counter for the
# whole process: two threads parsing at once (two users' calculators, or one and
# Streamlit compiling a page) can fail with "SystemError: AST constructor recursion
# depth mismatch" (python/cpython#106905). Every parse of the process takes this lock
# once ``serialize_parsing`` has run (the app's start); the calculator's always do.
_PARSING = threading.RLock()
_parse = ast.parse


def parse_serialized(*args, **kwargs) -> ast.AST:
    """``ast.parse``, one thread at a time."""
    with _PARSING:
        return _parse(*args, **kwargs)


def serialize_parsing() -> None:
    """Make ``ast.parse`` take the calculator's lock, for every caller in the process."""
    ast.parse = parse_serialized


def evaluate(expression: str) -> int | float:
    """Evaluate plain arithmetic without ``eval``: numbers, + - * / // % ** and brackets."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError("expression too long")
    tree = parse_serialized(expression.replace("^", "**").replace("×", "*")
                            .replace("÷", "/"), mode="eval")
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError("exponent too large")
        if _result_bits(node.op, left, right) > MAX_RESULT_BITS:
            raise ValueError("result too large")
        return _BINARY[type(node.op)](left, right)
    raise ValueError("only numbers and + - * / // % ** ( ) are allowed")


def _result_bits(op: ast.operator, left: int | float, right: int | float) -> int:
    """An upper bound of an integer result's size, known before it is computed (floats
    overflow on their own, at once)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    if isinstance(op, ast.Pow):
        return left.bit_length() * right if right > 0 else 0
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length()
    return max(left.bit_length(), right.bit_length()) + 1


def format_number(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}" if isinstance(value, float) else str(value)


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12*7' or '(3+4)/2' and return the result."""
    try:
        return format_number(evaluate(expression))
    except ZeroDivisionError:
        return "error: division by zero"
    except (ValueError, SyntaxError, TypeError, OverflowError) as exc:
        return f"error: {exc}" if str(exc) else "error: not an arithmetic expression"


@tool
def current_time() -> str:
    """Return the current date and time in UTC, e.g. 'Wednesday 25 November 2026, 22:58
    UTC (2026-11-25T22:58:51+00:00)': readable, with the exact ISO form after it."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return f"{now:%A} {now.day} {now:%B %Y, %H:%M} UTC ({now.isoformat()})"


DEFAULT_TOOLS = (calculator, current_time)
