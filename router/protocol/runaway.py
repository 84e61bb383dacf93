"""Stopping a local model that has run away (pure): the same span over and over, or the
end-of-turn markup of some model family written out as text.

The rule, measured against real prose and code (bench/runaway.py): the answer's last characters
are one unit repeated, back to back, at least `repeats` times and over at least `span`
characters (defaults 10 and 600): a line of 100 characters ten times, a word of 5 characters 120
times, one character 600 times. (With 6 or 8 repeats, one file of 42 MB of Python and package
documentation was stopped: a test of RFC 2047 headers that holds one 105-character unit 9 times.)
Real text repeats itself, but not exactly, back to back, that long: table rows differ in their
values, test cases in their arguments. It is checked every `every` characters on the last
`window` characters (so units up to window/repeats = 1,024 characters) of text and thinking (not tool-call
arguments: a file may legitimately hold repeated lines, and `max_output_tokens` bounds those).

How: the last `probe` characters are looked for further back in the window (str.rfind, in C);
each earlier occurrence proposes a period, which is checked by comparing slices (also in C), so
a check costs a few microseconds however long the window.
"""

from __future__ import annotations

from dataclasses import dataclass

# End-of-turn markers of model families; written out as text, the turn should have ended there.
# (`</s>` is left out: it is also HTML's strikethrough.)
END_OF_TURN = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end|>",
    "<|return|>",
    "<|END_OF_TURN_TOKEN|>",
    "<｜end▁of▁sentence｜>",
    "<|eom_id|>",
    "[/INST]",
)


@dataclass(frozen=True, slots=True)
class Repetition:
    period: int  # characters in the repeated unit
    repeats: int  # how many times it came back to back
    unit: str

    def describe(self) -> str:
        shown = self.unit if len(self.unit) <= 60 else self.unit[:57] + "..."
        return f"the same {self.period} characters {self.repeats} times in a row ({shown!r})"


class RepetitionWatch:
    """Feed the answer's text as it streams; `add` says when it has started repeating itself."""

    def __init__(
        self, span: int = 600, repeats: int = 10, window: int = 10240, every: int = 64, probe: int = 24
    ) -> None:
        self.span, self.repeats, self.window, self.every, self.probe = span, repeats, window, every, probe
        self._tail = ""  # the window as of the last check
        self._new: list[str] = []  # what came since, joined at the next check
        self._unchecked = 0

    def add(self, text: str) -> Repetition | None:
        self._new.append(text)
        self._unchecked += len(text)
        if self._unchecked < self.every:
            return None
        self._unchecked = 0
        self._tail = (self._tail + "".join(self._new))[-self.window :]
        self._new.clear()
        return repeated_tail(self._tail, self.span, self.repeats, self.probe)


def repeated_tail(text: str, span: int = 600, repeats: int = 10, probe: int = 24) -> Repetition | None:
    """The unit `text` ends with, repeated back to back `repeats` times over `span` characters."""
    if len(text) < span:
        return None
    size = min(probe, len(text) // repeats)
    needle = text[-size:]
    end = len(text) - size  # where the needle itself starts
    search_end = len(text) - 1
    for _ in range(8):  # a few candidate periods, nearest first
        found = text.rfind(needle, 0, search_end)
        if found < 0:
            return None
        period = end - found
        times = max(repeats, -(-span // period))
        if times * period > len(text):
            return None
        unit = text[-period:]
        if text[-times * period :] == unit * times:
            count = times
            while (count + 1) * period <= len(text) and text[-(count + 1) * period : -count * period] == unit:
                count += 1
            return Repetition(period, count, unit)
        search_end = found + size - 1
    return None


_OPENERS = "".join(sorted({m[0] for m in END_OF_TURN}))  # every marker starts with one of these
_LONGEST = max(len(m) for m in END_OF_TURN)


def leaked_end(text: str) -> int | None:
    """Where end-of-turn markup of some family starts in `text`, if it is there."""
    if not any(c in text for c in _OPENERS):
        return None
    at = [i for i in (text.find(m) for m in END_OF_TURN) if i >= 0]
    return min(at) if at else None


def partial_end(text: str) -> int:
    """How many characters at the end of `text` could be the start of an end-of-turn marker
    (held back until the next piece says whether it is one)."""
    for start in range(max(0, len(text) - _LONGEST + 1), len(text)):
        if text[start] in _OPENERS:
            tail = text[start:]
            if any(m.startswith(tail) for m in END_OF_TURN):
                return len(text) - start
    return 0
