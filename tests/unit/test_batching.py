"""MicroBatcher: a lone request is flushed alone; requests that arrive while flushes are in flight form the next
batch; results go back in order; a failed flush fails only its own batch; asked to, a small batch lingers for
company; asked to, an item that waited too long is refused instead of flushed. No I/O; the linger and deadline
tests use times long against what happens between their steps."""

from __future__ import annotations

import asyncio

import pytest

from penpay.service_layer.batching import MicroBatcher, QueueDeadlineExceeded


class Recorder:
    """A flush that records each batch and waits for ``release`` before answering."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: Exception | None = None

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail_with is not None and items[0] < 0:
            raise self.fail_with
        return [i * 10 for i in items]


async def test_a_lone_item_is_flushed_at_once_in_a_batch_of_one() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1)
    assert await batcher.submit(3) == 30
    assert rec.batches == [[3]]


async def test_an_item_submitted_right_after_the_last_flush_is_flushed_too() -> None:
    """The waiter of a batch resumes before the drained task's done-callbacks run: a submit at that moment must
    start a new drainer rather than count the finished one (it used to wait forever with max_in_flight=1)."""
    rec = Recorder()
    batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1)
    async with asyncio.timeout(5):
        for i in range(5):
            assert await batcher.submit(i) == i * 10
    assert rec.batches == [[0], [1], [2], [3], [4]]


async def test_items_arriving_during_a_flush_form_the_next_batch_and_get_their_own_results() -> None:
    rec = Recorder()
    rec.release.clear()
    batcher = MicroBatcher(rec.flush, max_batch=100, max_in_flight=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the first flush starts, and waits
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 12)]
    await asyncio.sleep(0)
    assert batcher.queued == 10
    rec.release.set()

    assert await first == 10
    assert [await t for t in rest] == [i * 10 for i in range(2, 12)]
    assert rec.batches == [[1], list(range(2, 12))]


async def test_max_batch_caps_a_batch_and_max_in_flight_caps_concurrent_flushes() -> None:
    rec = Recorder()
    rec.release.clear()
    batcher = MicroBatcher(rec.flush, max_batch=3, max_in_flight=2)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(8)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(rec.batches) == 2  # two flushes in flight, the others queue behind them
    rec.release.set()
    assert [await t for t in tasks] == [i * 10 for i in range(8)]
    assert all(len(b) <= 3 for b in rec.batches)
    assert sorted(i for b in rec.batches for i in b) == list(range(8))


async def test_a_failed_flush_fails_its_own_batch_only() -> None:
    rec = Recorder()
    rec.fail_with = RuntimeError("database down")
    rec.release.clear()
    batcher = MicroBatcher(rec.flush, max_batch=100, max_in_flight=1)
    doomed = asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0)
    fine = asyncio.create_task(batcher.submit(5))
    await asyncio.sleep(0)
    rec.release.set()

    with pytest.raises(RuntimeError, match="database down"):
        await doomed
    assert await fine == 50


async def test_a_waiter_that_gives_up_does_not_stop_the_batch() -> None:
    rec = Recorder()
    rec.release.clear()
    batcher = MicroBatcher(rec.flush, max_batch=100, max_in_flight=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    quitter = asyncio.create_task(batcher.submit(2))
    stayer = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0)
    quitter.cancel()
    rec.release.set()

    assert await first == 10 and await stayer == 30
    assert rec.batches == [[1], [2, 3]]  # the cancelled caller's item was still flushed with its batch
    await batcher.aclose()


async def test_a_flush_returning_the_wrong_number_of_results_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = MicroBatcher(short)
    with pytest.raises(RuntimeError, match="returned 0 results"):
        await batcher.submit(1)


def test_sizes_must_be_positive() -> None:
    async def flush(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="positive"):
        MicroBatcher(flush, max_batch=0)


class TestLinger:
    """``linger_s``: a small batch waits for company, a full one does not. The lingers below are long against what
    the tests do in between (a few event-loop steps), so the order of events is never in doubt."""

    async def test_items_arriving_within_the_linger_share_one_batch(self) -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1, linger_s=0.5)
        first = asyncio.ensure_future(batcher.submit(1))
        for _ in range(5):
            await asyncio.sleep(0)  # the drainer has started and is lingering
        assert rec.batches == []
        second = asyncio.ensure_future(batcher.submit(2))
        async with asyncio.timeout(5):
            assert await asyncio.gather(first, second) == [10, 20]
        assert rec.batches == [[1, 2]]

    async def test_without_a_linger_the_first_item_goes_alone(self) -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1)
        first = asyncio.ensure_future(batcher.submit(1))
        for _ in range(5):
            await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.submit(2))
        async with asyncio.timeout(5):
            await asyncio.gather(first, second)
        assert rec.batches == [[1], [2]]

    async def test_a_full_batch_does_not_wait_for_the_linger(self) -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec.flush, max_batch=3, max_in_flight=1, linger_s=60)
        async with asyncio.timeout(5):  # would take the whole minute if the linger held a full batch back
            assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 10, 20]
        assert rec.batches == [[0, 1, 2]]

    async def test_a_lone_item_is_flushed_when_the_linger_ends(self) -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1, linger_s=0.01)
        async with asyncio.timeout(5):
            assert await batcher.submit(7) == 70
        assert rec.batches == [[7]]

    async def test_what_is_left_after_a_full_batch_lingers_again(self) -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec.flush, max_batch=2, max_in_flight=1, linger_s=0.05)
        async with asyncio.timeout(5):
            assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 10, 20]
        assert rec.batches == [[0, 1], [2]]


def test_a_linger_or_a_deadline_cannot_be_negative() -> None:
    async def flush(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="negative"):
        MicroBatcher(flush, linger_s=-0.1)
    with pytest.raises(ValueError, match="negative"):
        MicroBatcher(flush, max_wait_s=-1)


class TestDeadline:
    """``max_wait_s``: an item that has waited longer than that when a drainer takes it is refused, not flushed."""

    async def test_items_queued_past_the_deadline_are_refused_and_never_flushed(self) -> None:
        rec = Recorder()
        rec.release.clear()  # the first batch holds the only drainer
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1, max_wait_s=0.05)
        first = asyncio.ensure_future(batcher.submit(1))
        for _ in range(5):
            await asyncio.sleep(0)
        late = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.15)  # they wait three times their deadline
        fresh = asyncio.ensure_future(batcher.submit(4))
        for _ in range(5):
            await asyncio.sleep(0)
        rec.release.set()
        async with asyncio.timeout(5):
            assert await first == 10
            assert await fresh == 40
            for waiter in late:
                with pytest.raises(QueueDeadlineExceeded) as refused:
                    await waiter
                assert refused.value.waited_s > 0.05
        assert rec.batches == [[1], [4]]  # 2 and 3 never reached the flush; 4, queued just now, did

    async def test_the_wait_counts_from_since_and_an_item_already_late_is_refused_on_submit(self) -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1, max_wait_s=1.0)
        now = asyncio.get_running_loop().time()
        with pytest.raises(QueueDeadlineExceeded) as refused:
            await batcher.submit(1, since=now - 1.5)  # its request arrived 1.5 s ago: refused, never queued
        assert refused.value.waited_s >= 1.5
        assert batcher.queued == 0
        async with asyncio.timeout(5):
            assert await batcher.submit(2, since=now - 0.5) == 20  # half a second old: within the deadline
            assert await batcher.submit(3, since=now + 60) == 30  # a clock ahead of the loop's counts as now
        assert rec.batches == [[2], [3]]

    async def test_without_a_deadline_a_long_wait_is_still_flushed(self) -> None:
        rec = Recorder()
        rec.release.clear()
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1)
        first = asyncio.ensure_future(batcher.submit(1))
        for _ in range(5):
            await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.1)
        rec.release.set()
        async with asyncio.timeout(5):
            assert await asyncio.gather(first, second) == [10, 20]
        assert rec.batches == [[1], [2]]

    async def test_a_refused_item_whose_caller_gave_up_is_left_alone(self) -> None:
        rec = Recorder()
        rec.release.clear()
        batcher = MicroBatcher(rec.flush, max_batch=8, max_in_flight=1, max_wait_s=0.02)
        first = asyncio.ensure_future(batcher.submit(1))
        for _ in range(5):
            await asyncio.sleep(0)
        gone = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.05)
        gone.cancel()
        rec.release.set()
        async with asyncio.timeout(5):
            assert await first == 10
            await batcher.aclose()
        assert gone.cancelled()
        assert rec.batches == [[1]]
