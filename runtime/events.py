"""Streaming decisions: from one logit vector per step to events ("yes" at 3.41 s, confidence 0.93).

Per step t (the manifest's `decisions` section, or DecisionConfig's defaults):
    p_t      = softmax(logits_t)
    s_t      = mean(p_{t-W+1} .. p_t)             W = smoothing_steps (fewer at the start of a stream)
    k        = argmax of s_t over the classes other than `background`
    event    if s_t[k] >= threshold, s[k] fell below threshold since class k last fired (one event per
             crossing: a word whose posterior stays high fires once), and at least refractory_steps steps
             have passed since the last event of any class
The event's time is when step t's last sample arrived (FrontendConfig.step_end_seconds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DecisionConfig:
    threshold: float = 0.8
    smoothing_steps: int = 5
    refractory_steps: int = 50
    background: str | None = None  # a label that never fires (background / unknown)
    chosen_on: str = "default"  # how the values were chosen (e.g. a validation recording)

    def to_manifest(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, d: dict | None) -> DecisionConfig:
        return cls() if d is None else cls(**d)


@dataclass(frozen=True)
class Event:
    time: float  # seconds since the stream started (steps if the rate is unknown)
    label: str
    confidence: float  # the smoothed posterior that crossed the threshold
    step: int  # the model step it fired on (0-based)

    def line(self) -> str:
        return f"{self.time:.3f}\t{self.label}\t{self.confidence:.3f}"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class Detector:
    """Stateful over a stream: feed it the logits of consecutive steps, in chunks of any size."""

    def __init__(self, cfg: DecisionConfig, labels: list[str], step_time):
        self.cfg, self.labels, self.step_time = cfg, list(labels), step_time
        self.mask = np.ones(len(self.labels), bool)  # classes that may fire
        if cfg.background is not None:
            self.mask[self.labels.index(cfg.background)] = False
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros((0, len(self.labels)), np.float64)  # the last W-1 posteriors
        self._step = 0  # steps seen
        self._last = -(10**12)  # step of the last event
        self._last_fire = np.full(len(self.labels), -2)  # per class: step of its last event
        self._last_below = np.full(len(self.labels), -1)  # per class: last step its score was below threshold

    def update(self, logits: np.ndarray) -> list[Event]:
        """logits (k, O) of the next k steps -> the events among them (in order)."""
        W = self.cfg.smoothing_steps
        p = softmax(np.asarray(logits, np.float64).reshape(-1, len(self.labels)))
        if len(p) == 0:
            return []
        both = np.concatenate((self._history, p))
        # each step's window: the W posteriors up to it, zeros in front at a stream's start; summed in one
        # fixed order, so the result does not depend on how the steps were split into updates
        padded = np.concatenate((np.zeros((W - 1 - len(self._history), both.shape[1])), both))
        windows = np.lib.stride_tricks.sliding_window_view(padded, W, axis=0)  # (k, O, W)
        count = np.minimum(W, self._step + np.arange(1, len(p) + 1))
        smooth = windows.sum(-1) / count[:, None]  # (k, O)
        cand = np.where(self.mask, smooth, -1.0)
        best = cand.argmax(1)
        score = cand[np.arange(len(p)), best]
        steps = self._step + np.arange(len(p))
        below = np.where(cand < self.cfg.threshold, steps[:, None], -1)  # (k, O)
        below = np.maximum.accumulate(np.concatenate((self._last_below[None], below)), 0)[1:]
        self._last_below = below[-1]
        events = []
        for i in np.flatnonzero(score >= self.cfg.threshold):
            t, k = int(steps[i]), int(best[i])
            if t - self._last >= self.cfg.refractory_steps and below[i, k] > self._last_fire[k]:
                self._last = self._last_fire[k] = t
                events.append(Event(self.step_time(t), self.labels[k], float(score[i]), t))
        self._history = both[-(W - 1) :] if W > 1 else both[:0]
        self._step += len(p)
        return events


# ----------------------------------------------------------------------------
# evaluation on long recordings


def score_events(
    events: list[Event], truth: list[tuple[float, float, str]], hours: float, tolerance: float = 0.5
) -> dict:
    """Detection rate and false alarms per hour. truth: (start s, end s, label) of each keyword spoken.
    An event hits an utterance of its label if it fires in [start, end + tolerance]; each utterance counts
    once; every other event is a false alarm (a wrong label on a real word included)."""
    used = [False] * len(truth)
    false_alarms = 0
    for e in events:
        hit = next(
            (
                j
                for j, (s, end, lab) in enumerate(truth)
                if not used[j] and lab == e.label and s <= e.time <= end + tolerance
            ),
            None,
        )
        if hit is None:
            false_alarms += 1
        else:
            used[hit] = True
    n = len(truth)
    return {
        "utterances": n,
        "detected": int(sum(used)),
        "detection_rate": float(sum(used) / n) if n else 0.0,
        "false_alarms": false_alarms,
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else 0.0,
        "hours": hours,
    }
