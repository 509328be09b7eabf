"""RFC 3263 location against a real DNS server: dnsmasq on 127.0.0.1.

Each test starts ``/usr/sbin/dnsmasq`` in the foreground on a free port,
serving only records given on its command line (``--no-resolv``,
``--no-hosts``, ``--local=/example.test/``: nothing is forwarded, no query
leaves the machine), and logging every query it receives to a file. The
resolver under test asks it through ``twisted.names`` on the real reactor;
its cache runs on a ``task.Clock``, so TTL expiry is a ``clock.advance``,
not a wait. The log shows what really went over the wire: to prove that a
cached lookup sent nothing, a *barrier* query is sent after it, and once the
barrier is in the log every earlier query would be too.

dnsmasq is killed by PID when the test ends. A missing dnsmasq fails the
test with the package to install: it is never skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol

from sipd.dns import DnsError, Query, RecordType, Resolution, Rfc3263Resolver, Transport
from sipd.sip.uri import parse_uri
from tests.conftest import eventually, free_udp_port, get_reactor, settle, within

DNSMASQ = "/usr/sbin/dnsmasq"

_barriers = itertools.count()


@dataclass
class Dnsmasq:
    """One dnsmasq process: its port, its query log and how it was started."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    args: list[str]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def queries(self, rtype: str, name: str) -> int:
        """How many ``rtype`` queries for ``name`` dnsmasq received so far."""
        return self.log_text().count(f"query[{rtype}] {name} from ")

    def all_queries(self) -> list[str]:
        """Every query line, as ``TYPE name`` (barriers left out)."""
        found = []
        for line in self.log_text().splitlines():
            _, marker, rest = line.partition(": query[")
            if marker and "barrier-" not in rest:
                rtype, _, tail = rest.partition("] ")
                found.append(f"{rtype} {tail.split(' from ')[0]}")
        return found

    def report(self) -> str:
        return f"$ {' '.join(self.args)}\n--- log\n{self.log_text()[-3000:]}"

    def stop(self) -> None:
        """Terminate by PID (kill if it lingers) and reap."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    async def barrier(self) -> None:
        """Send one more query and wait until dnsmasq logged it (and so all before it)."""
        name = f"barrier-{next(_barriers)}.example.test"
        probe = Rfc3263Resolver(
            [("127.0.0.1", self.port)], timeout=(1.0, 2.0), hosts_file=None, clock=task.Clock()
        )
        await within(probe.lookup(Query(name, RecordType.A)), 10)
        assert await eventually(lambda: f"query[A] {name} " in self.log_text()), self.report()


class DnsmasqFactory:
    """Starts dnsmasq processes for one test; each is stopped by PID afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.runs: list[Dnsmasq] = []

    async def start(self, *records: str, local_ttl: int = 60, binary: str = DNSMASQ) -> Dnsmasq:
        """dnsmasq on 127.0.0.1 and a free port, serving ``records`` (dnsmasq options)."""
        if not os.access(binary, os.X_OK):
            pytest.fail(
                f"{binary} is missing: install the Debian package dnsmasq-base "
                "(apt-get install dnsmasq-base) to run the DNS integration tests"
            )
        for attempt in range(5):
            port = free_udp_port()
            log = self.tmp_path / f"dnsmasq-{len(self.runs)}-{attempt}.log"
            args = [
                binary,
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                "--group=root",
                "--local=/example.test/",
                f"--local-ttl={local_ttl}",
                "--log-queries",
                f"--log-facility={log}",
                *records,
            ]
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            run = Dnsmasq(proc, port, log, args)
            self.runs.append(run)
            ready = await eventually(
                lambda run=run: run.proc.poll() is not None or "started, version" in run.log_text(),
                timeout=10,
            )
            if ready and proc.poll() is None:
                return run
            run.stop()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if "Address already in use" not in err + run.log_text():
                pytest.fail(f"dnsmasq did not start: {err}\n{run.report()}")
        pytest.fail("dnsmasq found no free port in 5 attempts")

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop()
            if run.proc.stderr is not None:
                run.proc.stderr.close()


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[DnsmasqFactory]:
    """A factory of dnsmasq servers, each stopped by PID after the test."""
    factory = DnsmasqFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def resolver_for(server: Dnsmasq, clock: task.Clock | None = None, **kw: Any) -> Rfc3263Resolver:
    """A resolver that asks only ``server``, with its cache on ``clock``."""
    options: dict[str, Any] = {
        "timeout": (1.0, 2.0),
        "hosts_file": None,
        "supported": (Transport.UDP, Transport.TCP),
        **kw,
    }
    return Rfc3263Resolver([("127.0.0.1", server.port)], clock=clock or task.Clock(), **options)


def hops(resolution: Resolution) -> list[tuple[str, int, str]]:
    return [(t.host, t.port, t.transport.value) for t in resolution.targets]


async def resolve(resolver: Rfc3263Resolver, uri: str) -> Resolution:
    result: Resolution = await within(resolver.resolve(parse_uri(uri)), 10)
    return result


async def no_stray_timers(before: set[int]) -> None:
    """Nothing twisted.names scheduled outlives the lookups (stopListening is one turn late)."""
    await settle(0.01)
    stray = [dc for dc in get_reactor().getDelayedCalls() if dc.active() and id(dc) not in before]
    assert not stray, f"delayed calls left behind: {stray}"


CHAIN = (
    "--naptr-record=example.test,10,10,s,SIP+D2U,,_sip._udp.example.test",
    "--naptr-record=example.test,20,10,s,SIP+D2T,,_sip._tcp.example.test",
    "--naptr-record=example.test,5,10,s,SIP+D2S,,_sip._sctp.example.test",
    "--srv-host=_sip._udp.example.test,sip2.example.test,5071,20,0",
    "--srv-host=_sip._udp.example.test,sip1.example.test,5070,10,60",
    "--srv-host=_sip._tcp.example.test,sip3.example.test,5080,10,0",
    "--host-record=sip1.example.test,127.0.0.1",
    "--host-record=sip2.example.test,127.0.0.2,::2",
    "--host-record=sip3.example.test,127.0.0.3",
)


@pytest_twisted.ensureDeferred
async def test_naptr_srv_and_address_records_give_the_ordered_targets(
    dnsmasq: DnsmasqFactory,
) -> None:
    before = {id(dc) for dc in get_reactor().getDelayedCalls()}
    server = await dnsmasq.start(*CHAIN)
    resolution = await resolve(resolver_for(server), "sip:bob@example.test")
    assert hops(resolution) == [
        ("127.0.0.1", 5070, "udp"),  # NAPTR order 10 (SCTP at order 5 skipped), SRV prio 10
        ("127.0.0.2", 5071, "udp"),  # same NAPTR, SRV prio 20
        ("::2", 5071, "udp"),
        ("127.0.0.3", 5080, "tcp"),  # NAPTR order 20
    ]
    assert [t.hostname for t in resolution.targets][::3] == [
        "sip1.example.test",
        "sip3.example.test",
    ]
    await server.barrier()
    asked = server.all_queries()
    assert asked[:3] == [
        "NAPTR example.test",
        "SRV _sip._udp.example.test",
        "SRV _sip._tcp.example.test",
    ]
    assert "SRV _sip._sctp.example.test" not in asked
    assert sorted(asked[3:]) == sorted(
        f"{t} sip{n}.example.test" for n in (1, 2, 3) for t in ("A", "AAAA")
    )
    await no_stray_timers(before)


@pytest_twisted.ensureDeferred
async def test_srv_targets_at_different_priorities_come_in_priority_order(
    dnsmasq: DnsmasqFactory,
) -> None:
    server = await dnsmasq.start(
        "--srv-host=_sip._udp.two.example.test,backup.example.test,5090,20,100",
        "--srv-host=_sip._udp.two.example.test,main.example.test,5080,10,1",
        "--host-record=main.example.test,127.0.0.10",
        "--host-record=backup.example.test,127.0.0.20",
    )
    for seed in range(5):
        resolver = resolver_for(server, rng=random.Random(seed), address_types=(RecordType.A,))
        resolution = await resolve(resolver, "sip:two.example.test;transport=udp")
        assert hops(resolution) == [("127.0.0.10", 5080, "udp"), ("127.0.0.20", 5090, "udp")]
        cursor = resolution.cursor()
        assert cursor.next() == resolution.targets[0]
        # The first target is down: the caller moves on to the second.
        nxt = cursor.fail("timeout")
        assert nxt is not None and nxt.host == "127.0.0.20"
    await server.barrier()
    assert "NAPTR two.example.test" not in server.all_queries()  # transport= skips NAPTR


@pytest_twisted.ensureDeferred
async def test_answers_are_cached_for_their_ttl_and_asked_again_after(
    dnsmasq: DnsmasqFactory,
) -> None:
    server = await dnsmasq.start(
        "--naptr-record=example.test,10,10,s,SIP+D2U,,_sip._udp.example.test",
        "--srv-host=_sip._udp.example.test,sip1.example.test,5070,10,0",
        "--host-record=sip1.example.test,127.0.0.1,5",  # TTL 5; the rest local-ttl 60
        local_ttl=60,
    )
    clock = task.Clock()
    resolver = resolver_for(server, clock, address_types=(RecordType.A,))
    first = await resolve(resolver, "sip:example.test")
    assert hops(first) == [("127.0.0.1", 5070, "udp")]
    assert first.ttl == 5  # the smallest TTL on the NAPTR -> SRV -> A chain

    clock.advance(4)
    cached = resolver.resolve(parse_uri("sip:example.test"))
    assert cached.called  # from the cache: no reactor turn, no query
    await server.barrier()
    assert server.all_queries() == [
        "NAPTR example.test",
        "SRV _sip._udp.example.test",
        "A sip1.example.test",
    ]

    clock.advance(1)  # the A record expired; NAPTR and SRV (60 s) did not
    again = await resolve(resolver, "sip:example.test")
    assert hops(again) == hops(first)
    await server.barrier()
    assert server.all_queries()[3:] == ["A sip1.example.test"]

    clock.advance(60)  # now everything expired
    await resolve(resolver, "sip:example.test")
    await server.barrier()
    assert server.all_queries()[4:] == [
        "NAPTR example.test",
        "SRV _sip._udp.example.test",
        "A sip1.example.test",
    ]


@pytest_twisted.ensureDeferred
async def test_concurrent_lookups_of_one_name_send_one_query_each(
    dnsmasq: DnsmasqFactory,
) -> None:
    server = await dnsmasq.start(*CHAIN)
    resolver = resolver_for(server)
    results = await within(
        defer.gatherResults(
            [resolver.resolve(parse_uri(f"sip:user{i}@example.test")) for i in range(5)]
        ),
        10,
    )
    assert len({tuple(hops(r)) for r in results}) == 1
    await server.barrier()
    assert server.queries("NAPTR", "example.test") == 1
    assert server.queries("SRV", "_sip._udp.example.test") == 1
    assert server.queries("A", "sip1.example.test") == 1


@pytest_twisted.ensureDeferred
async def test_nxdomain_gives_a_clear_error_naming_the_name_and_type(
    dnsmasq: DnsmasqFactory,
) -> None:
    server = await dnsmasq.start(*CHAIN)
    resolver = resolver_for(server)
    with pytest.raises(DnsError) as info:
        await resolve(resolver, "sip:bob@nope.example.test")
    err = info.value
    assert (err.name, err.rtype, err.cause) == (
        "nope.example.test",
        "A/AAAA",
        "no such domain (NXDOMAIN)",
    )
    assert str(err) == (
        "cannot locate a server for sip:nope.example.test: A/AAAA lookup of "
        "nope.example.test gave no such domain (NXDOMAIN)"
    )
    await server.barrier()
    # RFC 3263 fell through every step before giving up.
    assert server.all_queries() == [
        "NAPTR nope.example.test",
        "SRV _sip._udp.nope.example.test",
        "SRV _sip._tcp.nope.example.test",
        "A nope.example.test",
        "AAAA nope.example.test",
    ]


@pytest_twisted.ensureDeferred
async def test_a_refused_query_is_an_error_not_a_fall_through(dnsmasq: DnsmasqFactory) -> None:
    server = await dnsmasq.start(*CHAIN)  # answers only for example.test: REFUSED elsewhere
    with pytest.raises(DnsError) as info:
        await resolve(resolver_for(server), "sip:bob@elsewhere.invalid")
    assert (info.value.name, info.value.rtype) == ("elsewhere.invalid", "NAPTR")
    assert "REFUSED" in str(info.value)


class _Silent(DatagramProtocol):
    """A nameserver that never answers."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received = True


@pytest_twisted.ensureDeferred
async def test_a_silent_nameserver_times_out_with_a_clear_error() -> None:
    port = get_reactor().listenUDP(0, _Silent(), interface="127.0.0.1")
    try:
        number = port.getHost().port
        resolver = Rfc3263Resolver(
            [("127.0.0.1", number)], timeout=0.2, hosts_file=None, clock=task.Clock()
        )
        with pytest.raises(DnsError) as info:
            await resolve(resolver, "sip:example.test")
        assert info.value.rtype == "NAPTR"
        assert f"timed out (no answer from 127.0.0.1:{number})" in str(info.value)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_missing_dnsmasq_fails_the_test_instead_of_skipping(tmp_path: Path) -> None:
    factory = DnsmasqFactory(tmp_path)
    with pytest.raises(pytest.fail.Exception, match="dnsmasq-base"):
        await factory.start(binary=str(tmp_path / "no-such-dnsmasq"))
    assert factory.runs == []
