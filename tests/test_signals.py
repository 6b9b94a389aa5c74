"""Between the commit that marks messages sent and the writing of their dots, the job timeout
(SIGALRM) and SIGTERM must wait: an exception there would leave rows sent that nobody got."""

from __future__ import annotations

import signal
import time

from channels.email import signals_deferred


def test_a_signal_during_the_commit_step_is_handled_right_after_it():
    handled: list[float] = []
    previous = signal.signal(signal.SIGALRM, lambda number, frame: handled.append(time.time()))
    try:
        with signals_deferred():
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            time.sleep(0.05)
            assert handled == []  # not inside the step
            left_step = time.time()
        assert len(handled) == 1 and handled[0] >= left_step  # but straight after it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
