"""What the modules compiled with mypyc (tools/build_native.py) must not do.

mypyc leaves an exception that came through an awaited future in the thread's
handled-exception state when the compiled coroutine suspends while handling it,
and a later compiled ``finally`` that awaits raises it again, out of unrelated
code (quietwire/runtime/aio.py). So no compiled module awaits in an ``except``
or ``finally`` block, or uses ``async with`` / ``async for`` (their exits
await on the way out of an exception): they use ``runtime.aio.finally_await``.
"""

from __future__ import annotations

import ast

from tools.build_native import MODULES, source


def suspensions(nodes: list[ast.stmt]) -> list[int]:
    """Lines of the awaits (and ``async with``/``for``) in ``nodes``, nested
    functions apart (they run later, out of the block)."""
    found: list[int] = []
    pending: list[ast.AST] = list(nodes)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Await | ast.AsyncWith | ast.AsyncFor):
            found.append(node.lineno)
        pending.extend(ast.iter_child_nodes(node))
    return found


def unsafe(name: str, code: str) -> list[str]:
    """Where ``code`` suspends while it handles an exception."""
    where: list[str] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ExceptHandler):
            where += [f"{name}:{line}: await in except" for line in suspensions(node.body)]
        elif isinstance(node, ast.Try | ast.TryStar):
            where += [f"{name}:{line}: await in finally" for line in suspensions(node.finalbody)]
        elif isinstance(node, ast.AsyncWith | ast.AsyncFor):
            where.append(f"{name}:{node.lineno}: async with/for")
    return where


def test_no_compiled_module_awaits_while_it_handles_an_exception() -> None:
    found = [unsafe(m, source(m).read_text(encoding="utf-8")) for m in MODULES]
    assert [line for lines in found for line in lines] == []


def test_the_check_finds_each_form() -> None:
    code = (
        "async def f(x):\n"
        "    try:\n"
        "        await x\n"
        "    except E:\n"
        "        await x\n"
        "    finally:\n"
        "        await x\n"
        "    async with x:\n"
        "        pass\n"
    )
    assert sorted(unsafe("m", code)) == [
        "m:5: await in except",
        "m:7: await in finally",
        "m:8: async with/for",
    ]
