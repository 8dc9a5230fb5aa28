"""bench_spawner part 2: readiness read from the proxy's log (each route once, to the
millisecond, a line still being written left for the next read), and a p95 that counts a
spawn that never became ready as taking for ever."""

import math
from datetime import datetime

from benchmarks.bench_spawner import RouteLog, _p95_ratio, pct

ESC = "\x1b"


def _line(stamp: str, text: str) -> str:
    return f"{stamp} [ConfigProxy] {ESC}[32minfo{ESC}[39m: {text}\n"


def test_routes_are_read_once_with_their_stamps(tmp_path):
    log = tmp_path / "jupyterhub.log"
    log.write_text(
        "[I 2026-12-03 04:40:00.000 JupyterHub app:1] Starting\n"
        + _line("2026-12-03T04:40:01.250Z", "Adding route /user/u-0001 -> http://127.0.0.1:9")
        + _line("2026-12-03T04:40:01.251Z", "Route added /user/u-0001 -> http://127.0.0.1:9")
        + _line("2026-12-03T04:40:01.300Z", "201 POST /api/routes/user/u-0001 ")
        + _line("2026-12-03T04:40:02.000Z", "Route added /user/caf%C3%A9 -> http://127.0.0.1:9")
    )
    routes = RouteLog(log)
    found = routes.added()
    assert found == {
        "u-0001": datetime.fromisoformat("2026-12-03T04:40:01.251Z").timestamp(),
        "café": datetime.fromisoformat("2026-12-03T04:40:02.000Z").timestamp(),
    }
    assert routes.added() == {}  # nothing new


def test_a_line_being_written_is_read_when_complete(tmp_path):
    log = tmp_path / "jupyterhub.log"
    whole = _line("2026-12-03T04:40:03.500Z", "Route added /user/u-0002 -> http://127.0.0.1:9")
    log.write_text(whole[:30])
    routes = RouteLog(log)
    assert routes.added() == {}
    with open(log, "a") as out:
        out.write(whole[30:])
    assert list(routes.added()) == ["u-0002"]


def test_only_the_proxys_route_lines_count(tmp_path):
    log = tmp_path / "jupyterhub.log"
    log.write_text(
        # the hub's own words and a deleted route are not a server becoming reachable
        "[I 2026-12-03 04:40:00.000 JupyterHub proxy:1] Route added /user/u-0003 -> x\n"
        + _line("2026-12-03T04:40:04.000Z", "Route removed /user/u-0004 -> http://127.0.0.1:9")
        + _line("2026-12-03T04:40:04.000Z", "Adding route /user/u-0005 -> http://127.0.0.1:9")
    )
    assert RouteLog(log).added() == {}


def _run(latencies: list[float], lost: int) -> dict:
    every = latencies + [math.inf] * lost
    return {"users": len(every), "lost": lost, "p95_s": pct(every, 0.95),
            "p95_ready_s": pct(latencies, 0.95)}


def test_p95_ratio_of_complete_runs():
    pairs = [{"kdash": _run([1.0] * 18 + [2.2] * 2, 0), "plain": _run([1.0] * 18 + [2.0] * 2, 0)},
             {"kdash": _run([1.0] * 20, 0), "plain": _run([1.0] * 20, 0)}]
    assert _p95_ratio(pairs) == "p95 1.05x (+100 ms) [1.10 1.00]"


def test_a_run_that_lost_more_than_5_percent_has_no_finite_p95():
    plain = _run([1.0] * 10, 10)
    assert math.isinf(plain["p95_s"])
    assert not math.isinf(_run([1.0] * 19, 1)["p95_s"])  # 5 % lost: p95 still finite
    pairs = [{"kdash": _run([3.0] * 20, 0), "plain": plain}]
    assert _p95_ratio(pairs) == ("plain p95 unbounded (lost 10 of 20); "
                                 "ready ones' p95 3.00x")
    pairs = [{"kdash": plain, "plain": _run([3.0] * 20, 0)}]
    assert _p95_ratio(pairs).startswith("kdash p95 unbounded (lost 10 of 20)")


def test_pairs_where_plain_lost_spawns_are_told_apart_from_complete_ones():
    lost = {"kdash": _run([1.0] * 20, 0), "plain": _run([1.0] * 10, 10)}
    complete = [{"kdash": _run([1.3] * 20, 0), "plain": _run([1.0] * 20, 0)},
                {"kdash": _run([1.1] * 20, 0), "plain": _run([1.0] * 20, 0)}]
    # median of [0, 0, 1.30, 1.10, 0] would be 0: two lost pairs of three complete ones
    assert _p95_ratio([lost, lost] + complete + [lost]).startswith("plain p95 unbounded")
    assert _p95_ratio([lost] + complete) == (
        "p95 1.10x (+100 ms) [0.00 1.30 1.10]; 1.20x over the 2 where both finished")
    assert "where both finished" not in _p95_ratio(complete)


def test_pod_timeline_tells_where_a_start_went():
    """--pod-phases: each user's pod made, bound, Running (first time seen), the gaps between
    them and the POST and route, and why pods waited for a node, numbers blanked."""
    from pathlib import Path

    from benchmarks.bench_spawner import PodTimeline

    timeline = PodTimeline(Path("unused"), "k20-")
    waiting = {"conditions": [{"type": "PodScheduled", "status": "False",
                               "message": "0/6 nodes are available: pod has unbound claims."}]}
    for name, spec, status, at in [
        ("jupyter-k20-0001", {}, waiting, 10.5),
        ("jupyter-k20-0001", {"nodeName": "n"}, {}, 11.0),
        ("jupyter-k20-0001", {"nodeName": "n"}, {"phase": "Running"}, 11.25),
        ("jupyter-k20-0001", {"nodeName": "n"}, {"phase": "Running"}, 15.0),  # later event
        ("jupyter-other-0001", {"nodeName": "n"}, {"phase": "Running"}, 9.0),  # not ours
    ]:
        timeline._observe({"metadata": {"name": name}, "spec": spec, "status": status}, at)
    assert timeline.seen == {"k20-0001": {"made": 10.5, "bound": 11.0, "running": 11.25}}
    summary = timeline.summary({"k20-0001": 10.0}, {"k20-0001": 12.0})
    assert summary == ("POST->made p50 0.50 p95 0.50 s, made->bound p50 0.50 p95 0.50 s, "
                       "bound->running p50 0.25 p95 0.25 s, running->ready p50 0.75 p95 0.75 s"
                       "; waited for a node: 1x N/N nodes are available: pod has unbound "
                       "claims.")
