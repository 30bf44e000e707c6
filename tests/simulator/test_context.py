"""The simulator's clients get a narrow context, never the World."""

from __future__ import annotations

import ast
import pathlib

import pytest

from offsetledger import simulator
from offsetledger.simulator import World
from offsetledger.simulator._context import SimContext

_PACKAGE = pathlib.Path(simulator.__file__).parent
_CLIENTS = ("_consumer.py", "_producer.py", "_executor.py", "_group.py", "_context.py")


@pytest.mark.parametrize("module", _CLIENTS)
def test_clients_do_not_import_the_world(module: str) -> None:
    tree = ast.parse((_PACKAGE / module).read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert "offsetledger.simulator._world" not in imported, f"{module} imports the World"


def test_every_client_holds_the_context_not_the_world() -> None:
    world = World(1)
    world.create_topic("t", 1)
    clients = [
        world.consumer({"group.id": "g"}, "m"),
        world.producer(name="m"),
        world.executor("m"),
    ]
    for client in clients:
        held = [v for v in vars(client).values() if isinstance(v, World)]
        assert not held, f"{type(client).__name__} holds the World"
        assert any(v is world.context for v in vars(client).values()), type(client).__name__
    assert isinstance(world.context, SimContext)
