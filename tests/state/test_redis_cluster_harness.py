"""The Redis Cluster harness (tests/_harness/redis_cluster.py) does what the cluster tests rely
on: 3 masters and 3 replicas up with every slot covered, a slot moved to another master while
redis-py's cluster client writes to it (nothing acknowledged lost, nothing doubled), and a master
replaced by its replica, gracefully (nothing lost) or SIGKILLed (writes go on)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis
from _harness.redis_binary import redis_binary
from _harness.redis_cluster import SLOTS, RedisCluster

pytestmark = pytest.mark.slow

# Two keys of one hash tag in one script: a script touching a slot half moved gets TRYAGAIN,
# which the client must retry (as Clarion's scripts, which touch several keys of one app).
APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    c = RedisCluster(tmp_path_factory.mktemp("rc"), replicas=1, binary=redis_binary()).start()
    yield c
    c.stop()


@dataclass
class Writers:
    """Threads appending 0, 1, 2, ... to a list of their own under hash tag ``tag`` through a
    cluster client (a plain RPUSH and a two-key script in turn); what was acknowledged."""

    cluster: RedisCluster
    tag: str
    threads: int = 4
    acked: dict[int, list[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Writers:
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(self.threads)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def key(self, t: int) -> str:
        return f"log:{{{self.tag}}}:{t}"

    def _run(self, t: int) -> None:
        client = self.cluster.client()
        script = client.register_script(APPEND)
        acked = self.acked.setdefault(t, [])
        n = 0
        while not self._stop.is_set():
            try:
                if n % 2:
                    script(keys=[self.key(t), f"count:{{{self.tag}}}:{t}"], args=[n])
                else:
                    client.rpush(self.key(t), n)
            except redis.exceptions.RedisError as exc:
                self.errors.append(f"{n}: {type(exc).__name__}: {exc}")
                time.sleep(0.05)
                continue  # the same n again: a retried write must not double
            acked.append(n)
            n += 1
            time.sleep(0.001)

    def stored(self) -> dict[int, list[int]]:
        client = self.cluster.client()
        return {t: [int(x) for x in client.lrange(self.key(t), 0, -1)] for t in self.acked}


def test_three_masters_cover_every_slot(cluster: RedisCluster):
    masters = cluster.master_ports()
    assert len(masters) == 3
    owned = sum(b - a + 1 for i in cluster.view() if i.is_master for a, b in i.slots)
    assert owned == SLOTS
    assert all(len(cluster.replicas_of(m)) == 1 for m in masters)
    # Different tags land on different masters: what the per-app hash tag relies on.
    assert len({cluster.master_of_slot(cluster.slot_of(f"{{{t}}}")) for t in "abcdefgh"}) == 3


def test_slot_migrated_under_writes_loses_nothing(cluster: RedisCluster):
    slot = cluster.slot_of("{mig}")
    source = cluster.master_of_slot(slot)
    target = next(p for p in cluster.master_ports() if p != source)
    client = cluster.client()
    for i in range(200):
        client.set(f"ballast:{{mig}}:{i}", i)
    writers = Writers(cluster, "mig").start()
    time.sleep(0.5)
    # Small batches with pauses: the slot stays half moved for seconds under the writes.
    before = writers.count()
    moved = cluster.migrate_slot(slot, target, batch=2, pause=0.02)
    during = writers.count() - before
    time.sleep(0.5)
    writers.stop()
    assert cluster.master_of_slot(slot) == target
    assert moved >= 200
    assert during > 100, f"only {during} writes while the slot was moving"
    assert not writers.errors, writers.errors[:5]
    assert writers.stored() == writers.acked
    assert [client.get(f"ballast:{{mig}}:{i}") for i in range(200)] == [str(i) for i in range(200)]


def test_graceful_failover_under_writes_loses_nothing(cluster: RedisCluster):
    slot = cluster.slot_of("{gf}")
    master = cluster.master_of_slot(slot)
    writers = Writers(cluster, "gf").start()
    time.sleep(0.5)
    new = cluster.failover(master)
    time.sleep(0.5)
    writers.stop()
    assert new != master and cluster.master_of_slot(slot) == new
    stored = writers.stored()
    # A write refused meanwhile was retried with the same number: none lost, none doubled.
    assert stored == writers.acked


def test_killed_master_replaced_by_its_replica(cluster: RedisCluster):
    slot = cluster.slot_of("{kill}")
    master = cluster.master_of_slot(slot)
    writers = Writers(cluster, "kill").start()
    time.sleep(0.5)
    started = time.monotonic()
    new = cluster.failover(master, kill=True)
    took = time.monotonic() - started
    before = sum(len(v) for v in writers.acked.values())
    time.sleep(1.0)
    writers.stop()
    assert cluster.master_of_slot(slot) == new
    assert sum(len(v) for v in writers.acked.values()) > before, "no writes after the failover"
    # Asynchronous replication: the newest acknowledged writes may be gone, and a write whose
    # answer the kill swallowed may be there twice (retried), but the order holds and nothing
    # appears that was never sent.
    for t, stored in writers.stored().items():
        assert stored == sorted(stored)
        assert set(stored) <= set(writers.acked[t]) | {max(writers.acked[t]) + 1}
    assert took < 15, f"failover took {took:.1f} s"
    cluster.restart_node(master)
    assert master in cluster.replicas_of(new)


def test_killed_master_with_lagging_replica_loses_the_lag(cluster: RedisCluster):
    """``lag``: the replica frozen before the kill, so the writes of that window are gone for
    certain (what a test of loss reporting needs)."""
    slot = cluster.slot_of("{lag}")
    master = cluster.master_of_slot(slot)
    writers = Writers(cluster, "lag").start()
    time.sleep(0.5)
    new = cluster.failover(master, kill=True, lag=0.5)
    time.sleep(0.5)
    writers.stop()
    assert cluster.master_of_slot(slot) == new
    stored = writers.stored()
    lost = sum(len(set(writers.acked[t]) - set(stored[t])) for t in stored)
    assert lost > 20, f"only {lost} acknowledged writes lost in a 0.5 s window"
    cluster.restart_node(master)
