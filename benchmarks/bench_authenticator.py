"""Benchmark of KDashAuthenticator's LDAP form login through a real hub + proxy.

Baseline measured in the same run, on the same slapd: plain ldapauthenticator
`LDAPAuthenticator` (bind-DN template, one allowed group, the same user attributes in
auth_state). For each authenticator a fresh JupyterHub is started; N users fetch the login
page, then all POST the form at once (N concurrent logins); we report p50/p95 of the POST
(the login itself) and the LDAP operations per login, counted from slapd's `stats` log.
Two waves per hub: first logins (new hub users) and the same users logging in again.
KDashAuthenticator is measured as configured by default (managed hub groups, which makes
JupyterHub commit a group change on a user's first login) and with manage_groups=False
(the authenticator alone). Rounds alternate the configurations to spread machine noise.

    python -m benchmarks.bench_authenticator [--quick] [--users N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from kdash_hub.dev.hub import HubProcess
from kdash_hub.dev.ldap import SlapdServer


def directory_data(n: int) -> tuple[list[dict], list[dict]]:
    users = [{"uid": f"user{i}", "password": f"pw-{i}", "uidNumber": 10000 + i,
              "gidNumber": 10000 + i, "mail": f"user{i}@example.org",
              "displayName": f"User {i}"} for i in range(n)]
    names = [u["uid"] for u in users]
    groups = [{"cn": "gpu-users", "kind": "names", "members": names},
              {"cn": "datasci", "kind": "posix", "gidNumber": 3001, "members": names[::2]}]
    return users, groups


def common_ldap(prefix: str, slapd: SlapdServer) -> str:
    return (f'{prefix}.server_address = "127.0.0.1"\n'
            f"{prefix}.server_port = {slapd.port}\n"
            f'{prefix}.tls_strategy = "insecure"\n'
            f'{prefix}.bind_dn_template = ["uid={{username}},{slapd.people_dn}"]\n'
            f'{prefix}.auth_state_attributes = ["uidNumber", "gidNumber", "mail", '
            '"displayName"]\n')


def baseline_config(slapd: SlapdServer) -> str:
    return ('c.JupyterHub.authenticator_class = "ldapauthenticator.LDAPAuthenticator"\n'
            'c.JupyterHub.default_url = "/hub/home"\n'
            "c.LDAPAuthenticator.enable_auth_state = True\n"
            f'c.LDAPAuthenticator.allowed_groups = ["cn=gpu-users,{slapd.groups_dn}"]\n'
            + common_ldap("c.LDAPAuthenticator", slapd))


def kdash_config(slapd: SlapdServer, managed_groups: bool = True) -> str:
    return ('c.JupyterHub.authenticator_class = "kdash"\n'
            f"c.KDashAuthenticator.manage_groups = {managed_groups}\n"
            'c.JupyterHub.default_url = "/hub/home"\n'
            'c.KDashAuthenticator.allowed_groups = {"gpu-users"}\n'
            f'c.LDAPBackend.group_search_base = "{slapd.groups_dn}"\n'
            + common_ldap("c.LDAPBackend", slapd))


async def one_login(hub: HubProcess, user: dict, start: asyncio.Event, ready: list) -> float:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(f"{hub.url}/hub/login") as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        ready.append(user["uid"])
        await start.wait()
        t0 = time.perf_counter()
        async with s.post(f"{hub.url}/hub/login", allow_redirects=False, data={
                "username": user["uid"], "password": user["password"], "_xsrf": xsrf}) as r:
            await r.read()
            elapsed = time.perf_counter() - t0
            if r.status != 302:
                raise RuntimeError(f"login of {user['uid']} failed: {r.status}")
        return elapsed


async def login_wave(hub: HubProcess, slapd: SlapdServer, users: list[dict]) -> dict:
    """All users fetch the login page, then POST the form at the same moment."""
    start, ready = asyncio.Event(), []
    tasks = [asyncio.create_task(one_login(hub, u, start, ready)) for u in users]
    while len(ready) < len(users):  # every client has its login page and xsrf token
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # raises the failure
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    ops_before = slapd.operation_count()
    t0 = time.perf_counter()
    start.set()
    times = sorted(await asyncio.gather(*tasks))
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.5)  # let slapd flush its log
    ops = slapd.operation_count() - ops_before
    return {"p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))],
            "wall": wall, "ops_per_login": ops / len(users)}


async def measure(config: str, slapd: SlapdServer, users: list[dict], workdir: Path) -> dict:
    """First logins (new hub users), then the same users logging in again."""
    hub = HubProcess(config, workdir, start_timeout=90)
    await hub.start()
    try:
        return {"first": await login_wave(hub, slapd, users),
                "again": await login_wave(hub, slapd, users)}
    finally:
        await hub.stop()


async def main(args: argparse.Namespace) -> int:
    n = args.users or (40 if args.quick else 200)
    rounds = args.rounds or (1 if args.quick else 2)
    users, groups = directory_data(n)
    root = Path(tempfile.mkdtemp(prefix="kdash-bench-auth-"))
    slapd = SlapdServer(users=users, groups=groups, log_level="256",
                        workdir=root / "slapd").start()
    configs = {
        "ldapauthenticator": baseline_config(slapd),
        "kdash": kdash_config(slapd),
        "kdash-unmanaged": kdash_config(slapd, managed_groups=False),
    }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    try:
        for r in range(rounds):
            for name, cfg in configs.items():
                res = await measure(cfg, slapd, users, root / f"{name}-{r}")
                results[name].append(res)
                for wave, w in res.items():
                    print(f"round {r + 1} {name:17s} {wave:5s} p50 {w['p50'] * 1000:7.1f} ms"
                          f"  p95 {w['p95'] * 1000:7.1f} ms  all {n} in {w['wall']:.2f} s"
                          f"  LDAP ops/login {w['ops_per_login']:.2f}", flush=True)
    finally:
        slapd.cleanup()

    def avg(name: str, wave: str, key: str) -> float:
        return statistics.mean(r[wave][key] for r in results[name])

    print(f"\n{n} concurrent LDAP form logins through JupyterHub + CHP, {rounds} round(s); "
          "ratios against plain LDAPAuthenticator (target <= 1.2x)")
    for wave, label in (("first", "first login (new hub user)"),
                        ("again", "returning user")):
        print(f"  {label}:")
        for name in ("kdash", "kdash-unmanaged"):
            ratios = "  ".join(
                f"{key} {avg(name, wave, key) * 1000:7.1f} ms "
                f"({avg(name, wave, key) / avg('ldapauthenticator', wave, key):.2f}x)"
                for key in ("p50", "p95"))
            print(f"    {name:16s} {ratios}")
        base = "  ".join(f"{key} {avg('ldapauthenticator', wave, key) * 1000:7.1f} ms"
                         for key in ("p50", "p95"))
        print(f"    {'ldapauthenticator':16s} {base}")
    print("  LDAP operations per login: " + ", ".join(
        f"{name} {avg(name, 'first', 'ops_per_login'):.2f}" for name in configs))
    print("  (kdash-unmanaged = KDashAuthenticator with manage_groups=False: the authenticator"
          " alone, without JupyterHub's group-sync database commit)")
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 users, one round")
    parser.add_argument("--users", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=0)
    return asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(cli())
