"""A state machine with one flip-flop per state (one-hot), written the way ``m.FSM()`` is.

Amaranth's ``m.FSM()`` keeps the state as one binary-coded register, and the open flow does not
recode it (Yosys's FSM extraction skips registers with an initial value).  Every enable and
multiplexer select that depends on the state then decodes several state bits first, which puts
two or three LUT levels in front of every control path.  Here each state is a flip-flop of its
own (the initial state's initialised to 1), so ``in state S`` is one flip-flop and the decode is
gone::

    fsm = OneHot(m, "IDLE")
    with fsm.state("IDLE"):
        with m.If(go):
            fsm.goto("RUN")
    with fsm.state("RUN"):
        fsm.goto("IDLE")
    fsm.close()          # every state named in goto() has a body

Exactly one flag is set at a time: the flags reset to the initial state, and a transition clears
the current state's flag and sets the next one's in the same cycle.
"""
from contextlib import contextmanager

from amaranth import Cat, Signal

__all__ = ["OneHot"]


class OneHot:
    def __init__(self, m, initial: str, *, domain: str = "sync", prefix: str = "state"):
        self._m = m
        self._domain = domain
        self._prefix = prefix
        self._initial = initial
        self._flags: dict[str, Signal] = {}
        self._defined: set[str] = set()
        self._current: str | None = None
        self.flag(initial)

    def flag(self, name: str) -> Signal:
        """The flip-flop that is 1 in state ``name``."""
        if name not in self._flags:
            self._flags[name] = Signal(name=f"{self._prefix}_{name.lower()}", init=int(name == self._initial))
        return self._flags[name]


    @contextmanager
    def state(self, name: str):
        if self._current is not None:
            raise SyntaxError(f"state {name!r} inside state {self._current!r}")
        if name in self._defined:
            raise NameError(f"state {name!r} is defined twice")
        self._defined.add(name)
        self._current = name
        try:
            with self._m.If(self.flag(name)):
                yield
        finally:
            self._current = None

    def goto(self, name: str):
        """Leave the current state for ``name`` at the next clock edge."""
        if self._current is None:
            raise SyntaxError("goto() outside a state")
        self._m.d[self._domain] += [self.flag(self._current).eq(0), self.flag(name).eq(1)]

    def at_most_one(self):
        """A value that is 1 while at most one flag is set.  Every reachable state satisfies it
        (no flag set would be a dead end, never a wrong output); a proof by induction needs it
        asserted, as it starts from any assignment of the flip-flops, reachable or not."""
        flags = Cat(*self._flags.values())
        return (flags & (flags - 1)) == 0

    def close(self):
        missing = sorted(set(self._flags) - self._defined)
        if missing:
            raise NameError(f"states referenced but not defined: {', '.join(missing)}")
