"""A YAML loader with limits, enforced while the document is composed.

PyYAML composes aliases lazily: ``*a`` is the node of ``&a`` again, so nine lines of nested
aliases (a "billion laughs") compose in microseconds and explode only later, in whatever walks
the data; an alias inside its own anchor (``&a [*a]``) makes a recursive structure that nothing
can walk. Counting after construction is too late, so this loader counts while composing:

- every node, with each alias counted as the nodes it repeats (``MAX_NODES``);
- nesting depth, again through aliases (``MAX_DEPTH``);
- an alias to an anchor that is still open (a recursive structure) is refused.

Events come from libyaml (``CParser``) and only the composition is Python: scanning a 4 MiB
document is fast in C and composing stops at the node limit, so loading anything within the
file size cap takes well under a second.

Values the constructor cannot build (a date such as ``2023-13-45``, an integer of more than
4300 digits) are YAML errors at their node, like any other.
"""

from __future__ import annotations

from typing import cast

from yaml import AliasEvent, MarkedYAMLError, Node, YAMLError
from yaml._yaml import CParser
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark
from yaml.events import Event, NodeEvent
from yaml.reader import ReaderError
from yaml.resolver import Resolver

# About 10,000 probes written out (a probe is about nine nodes); composing up to the limit takes
# well under a second, and validating that many probes a second or two (off the event loop).
MAX_NODES = 100_000
MAX_DEPTH = 32


class BoundedLoader(Composer, CParser, SafeConstructor, Resolver):
    """Safe YAML (no object tags) from libyaml events, composed within the limits above."""

    def __init__(self, text: str) -> None:
        """Prepare to read ``text``."""
        CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._nodes = 0  # nodes so far, aliases counted as what they repeat
        self._depth = 0  # nodes being composed around the current one
        self._reach = 0  # deepest level reached inside the node being composed
        self._open: set[str] = set()  # anchors of the nodes being composed
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose one node (and what it contains), counting it against the limits."""
        event = self.peek_event()
        assert isinstance(event, NodeEvent)  # noqa: S101 - the composer asks only when a node follows
        if isinstance(event, AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        level = self._depth + 1
        nodes_before, outer_reach = self._nodes, self._reach
        self._reach = 0
        self._grow(1, level, event)
        anchor = event.anchor
        if anchor is not None:
            self._open.add(anchor)
        self._depth = level
        node = super().compose_node(parent, index)
        self._depth = level - 1
        self._open.discard(anchor)
        if node is not None:
            self._extent[id(node)] = (self._nodes - nodes_before, self._reach - level + 1)
        self._reach = max(outer_reach, self._reach)
        return node

    def construct_object(self, node: Node, deep: bool = False) -> object:
        """Build a value; one the constructor cannot build is an error at its node."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            kind = str(node.tag).rsplit(":", 1)[-1]
            # int() adds advice about sys.set_int_max_str_digits after a ';': not for users.
            problem = str(exc).split(";", 1)[0]
            raise ConstructorError(
                None, None, f"invalid {kind}: {problem}", node.start_mark
            ) from None

    def _count_alias(self, event: AliasEvent) -> None:
        anchor = event.anchor
        if anchor in self._open:
            raise _error(
                f"alias *{anchor} inside its own anchor &{anchor}: a recursive structure", event
            )
        target = self.anchors.get(anchor)
        if target is not None:  # an undefined alias is the composer's own error
            nodes, height = self._extent[id(target)]
            self._grow(nodes, self._depth + height, event)

    def _grow(self, nodes: int, level: int, event: Event) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _error(
                f"more than {MAX_NODES} nodes, counting each alias as the nodes it repeats "
                "(the limit against alias bombs)",
                event,
            )
        if level > MAX_DEPTH:
            raise _error(
                f"nested deeper than {MAX_DEPTH} levels (counting what aliases repeat)", event
            )
        self._reach = max(self._reach, level)


def _error(problem: str, event: Event) -> ComposerError:
    # libyaml's marks (yaml._yaml.Mark) carry the same line and column as PyYAML's.
    return ComposerError(None, None, problem, cast("Mark", event.start_mark))


def yaml_problem(exc: YAMLError, text: str) -> tuple[int, str]:
    """The 1-based line of a YAML error in ``text``, and what the problem is."""
    if isinstance(exc, ReaderError):
        # libyaml counts the position in bytes of the UTF-8 text.
        line = text.encode("utf-8")[: exc.position].count(b"\n") + 1
        return line, str(exc).split("\n", 1)[0]
    if not isinstance(exc, MarkedYAMLError):
        return 1, str(exc)
    mark = exc.problem_mark
    line = mark.line + 1 if mark is not None else 1
    problem = exc.problem or str(exc)
    if exc.context and exc.context_mark is not None:
        problem += f" ({exc.context} started at line {exc.context_mark.line + 1})"
    return line, problem
