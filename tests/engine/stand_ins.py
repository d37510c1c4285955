"""Test doubles for the start-up tuners (linear_tuning.py, attention_tuning.py): a scripted timer, and a kernel
that stands in where Triton's interpreter has no programmatic dependent launches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def counting_timer(
    timings: Iterator[float], counted: list[Any], per_timing: list[int]
) -> Callable[[Callable[[], object]], float]:
    """A scripted timer: runs each call once, notes in `per_timing` how many entries it added to `counted` (the
    calls of a kernel a timing must run), and returns the next of `timings`."""

    def timer(fn: Callable[[], object]) -> float:
        before = len(counted)
        fn()
        per_timing.append(len(counted) - before)
        return next(timings)

    return timer


class Plainly:
    """Stands in for a jitted kernel whose constexpr `flag` makes it a programmatic dependent launch (launched
    with `launch_pdl`): launches it plainly, noting in `asked` whether each launch was asked as one. With `skew`
    the dependent ones compute something else (their last argument doubled); with `fail` they raise, as a Triton
    without dependent launches would."""

    def __init__(self, kernel: Any, flag: str, asked: list[bool], *, skew: bool = False, fail: bool = False) -> None:
        self.kernel, self.flag, self.asked, self.skew, self.fail = kernel, flag, asked, skew, fail

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def launch(*args: Any, launch_pdl: bool = False, **kwargs: Any) -> None:
            dependent = kwargs.pop(self.flag)
            assert launch_pdl == dependent, "a dependent kernel is launched as a dependent launch, and only it"
            self.asked.append(dependent)
            if self.fail and dependent:
                raise TypeError("launch() got an unexpected keyword argument 'launch_pdl'")
            if self.skew and dependent:
                args = (*args[:-1], args[-1] * 2)
            self.kernel[grid](*args, **{self.flag: False}, **kwargs)

        return launch
