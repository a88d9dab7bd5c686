"""HistoryBuffer: the last K accepted states of a (batch of) system(s), detached.

Until K states have been pushed, the missing past is *zero-padded*: the window
has ``None`` in the oldest slots and the history features of those slots are
zeros (not features of a zero-mass state, which were NaN in the original system,
and not a repeat of the oldest state).
"""

from __future__ import annotations

from collections import deque

from aits.state import SystemState

__all__ = ["HistoryBuffer"]


class HistoryBuffer:
    """Ring buffer of the last ``length`` states (one buffer serves a whole batch).

    Every pushed state is stored as a detached copy with its acceleration cached
    (one force evaluation if it had none), so a stored state can never keep an
    autograd graph alive and later in-place changes to the caller's tensors do not
    reach it. All pushed states must share ``pos.shape``, dtype and device.
    """

    def __init__(self, length: int) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ValueError(f"HistoryBuffer length must be an int >= 0, got {length!r}")
        self.length = length
        self._states: deque[SystemState] = deque(maxlen=max(length, 1))

    def __len__(self) -> int:
        """Number of real (non-padded) states held, at most ``length``."""
        return min(len(self._states), self.length)

    @property
    def is_full(self) -> bool:
        """True once ``length`` real states exist (warm-up is over)."""
        return len(self) == self.length

    @property
    def n_padded(self) -> int:
        return self.length - len(self)

    def push(self, state: SystemState, *, copy: bool = True) -> None:
        """Append ``state`` (newest); the oldest drops out when full. No-op for K = 0.

        ``copy=False`` stores ``state`` itself (detached, its acceleration cached):
        for a caller whose states are never changed in place while the buffer holds
        them (:func:`aits.simulate`'s loop, whose states are new tensors each step).
        """
        if not isinstance(state, SystemState):
            raise TypeError(f"HistoryBuffer.push expects a SystemState, got {type(state).__name__}")
        if self._states:
            ref = self._states[-1]
            if (state.pos.shape, state.dtype, state.device) != (ref.pos.shape, ref.dtype, ref.device):
                raise ValueError(
                    f"HistoryBuffer.push: state has pos {tuple(state.pos.shape)} {state.dtype} on "
                    f"{state.device}, the buffer holds {tuple(ref.pos.shape)} {ref.dtype} on "
                    f"{ref.device}; call reset() first to change systems"
                )
        if self.length == 0:
            return
        kept = state.detach().with_acceleration()
        self._states.append(kept.clone() if copy else kept)

    def reset(self) -> None:
        """Forget every state."""
        self._states.clear()

    def states(self) -> list[SystemState]:
        """The real states, oldest first (``len(self)`` of them)."""
        return list(self._states)[-self.length:] if self.length else []

    def window(self) -> list[SystemState | None]:
        """``length`` slots, oldest first; the first :attr:`n_padded` are ``None``."""
        return [None] * self.n_padded + self.states()

    def __repr__(self) -> str:
        return f"HistoryBuffer(length={self.length}, filled={len(self)})"
