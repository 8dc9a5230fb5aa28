"""A real OpenLDAP `slapd` on 127.0.0.1 with demo users and groups, for the demo and tests.

The directory is written offline (slapd.conf + LDIF loaded with `slapadd`), then slapd is
started on a free port. With `tls=True` a throw-away CA and server certificate are made with
the `cryptography` package, so StartTLS and LDAPS can be tested *with* certificate checks.
Users and groups are plain data (see `DEMO_USERS` / `DEMO_GROUPS`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port
from .process import terminate

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

DEMO_USERS: list[dict] = [
    {"uid": "alice", "password": "alice-pw", "uidNumber": 2001, "gidNumber": 2001,
     "mail": "alice@example.org", "displayName": "Alice Liddell"},
    {"uid": "bob", "password": "bob-pw", "uidNumber": 2002, "gidNumber": 2002,
     "mail": "bob@example.org", "displayName": "Bob Builder"},
    {"uid": "carol", "password": "carol-pw", "uidNumber": 2003, "gidNumber": 2003,
     "mail": "carol@example.org", "displayName": "Carol Danvers"},
]
# kind "names": groupOfNames with member=<user dn>; kind "posix": posixGroup with memberUid.
DEMO_GROUPS: list[dict] = [
    {"cn": "admins", "kind": "names", "members": ["alice"]},
    {"cn": "gpu-users", "kind": "names", "members": ["alice", "bob"]},
    {"cn": "datasci", "kind": "posix", "gidNumber": 3001, "members": ["bob", "carol"]},
]


@dataclass
class TLSFiles:
    """PEM files of a throw-away CA and a server certificate for 127.0.0.1/localhost."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """Generate a CA and a server certificate (SAN 127.0.0.1, localhost) signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kdash-dev-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


@dataclass
class SlapdServer:
    """One slapd process serving `base_dn` with the given users and groups."""

    users: list[dict] = field(default_factory=lambda: [dict(u) for u in DEMO_USERS])
    groups: list[dict] = field(default_factory=lambda: [dict(g) for g in DEMO_GROUPS])
    base_dn: str = "dc=example,dc=org"
    admin_password: str = "admin-secret"
    service_password: str = "service-secret"
    tls: bool = False
    workdir: Path | None = None
    log_level: str = "0"
    port: int = 0
    ldaps_port: int = 0
    process: subprocess.Popen | None = None
    tls_files: TLSFiles | None = None
    _own_workdir: bool = False

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self.base_dn}"

    @property
    def service_dn(self) -> str:
        """A read-only account for searches (lookup_dn, refresh, uid lookups)."""
        return f"cn=service,{self.base_dn}"

    @property
    def people_dn(self) -> str:
        return f"ou=people,{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"ou=groups,{self.base_dn}"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "slapd.log"

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},{self.people_dn}"

    def _ldif(self) -> str:
        dc = self.base_dn.split(",")[0].split("=")[1]
        entries = [
            f"dn: {self.base_dn}\nobjectClass: dcObject\nobjectClass: organization\n"
            f"dc: {dc}\no: kdash dev\n",
            f"dn: {self.people_dn}\nobjectClass: organizationalUnit\nou: people\n",
            f"dn: {self.groups_dn}\nobjectClass: organizationalUnit\nou: groups\n",
            f"dn: {self.service_dn}\nobjectClass: organizationalRole\n"
            f"objectClass: simpleSecurityObject\ncn: service\n"
            f"userPassword: {self.service_password}\n",
        ]
        for u in self.users:
            lines = [
                f"dn: {self.user_dn(u['uid'])}", "objectClass: inetOrgPerson",
                "objectClass: posixAccount", f"uid: {u['uid']}",
                f"cn: {u.get('displayName', u['uid'])}", f"sn: {u['uid']}",
                f"userPassword: {u['password']}", f"uidNumber: {u['uidNumber']}",
                f"gidNumber: {u['gidNumber']}", f"homeDirectory: /home/{u['uid']}",
            ]
            if u.get("mail"):
                lines.append(f"mail: {u['mail']}")
            if u.get("displayName"):
                lines.append(f"displayName: {u['displayName']}")
            entries.append("\n".join(lines) + "\n")
        for g in self.groups:
            dn = f"cn={g['cn']},{self.groups_dn}"
            if g.get("kind", "names") == "posix":
                lines = [f"dn: {dn}", "objectClass: posixGroup", f"cn: {g['cn']}",
                         f"gidNumber: {g.get('gidNumber', 5000)}"]
                lines += [f"memberUid: {m}" for m in g["members"]]
            else:
                lines = [f"dn: {dn}", "objectClass: groupOfNames", f"cn: {g['cn']}"]
                members = g["members"] or []
                lines += [f"member: {self.user_dn(m)}" for m in members]
                if not members:  # groupOfNames needs at least one member
                    lines.append(f"member: {self.service_dn}")
            entries.append("\n".join(lines) + "\n")
        return "\n".join(entries)

    def _conf(self) -> str:
        schemas = "".join(
            f"include {SCHEMA_DIR / s}.schema\n"
            for s in ("core", "cosine", "nis", "inetorgperson")
        )
        tls = ""
        if self.tls_files:
            tls = (f"TLSCACertificateFile {self.tls_files.ca_cert}\n"
                   f"TLSCertificateFile {self.tls_files.cert}\n"
                   f"TLSCertificateKeyFile {self.tls_files.key}\n")
        return (
            f"{schemas}"
            f"pidfile {self.workdir / 'slapd.pid'}\n"
            f"argsfile {self.workdir / 'slapd.args'}\n"
            f"modulepath {MODULE_DIR}\nmoduleload back_mdb\n"
            f"{tls}"
            "database mdb\n"
            f"suffix \"{self.base_dn}\"\n"
            f"rootdn \"{self.admin_dn}\"\n"
            f"rootpw {self.admin_password}\n"
            f"directory {self.workdir / 'db'}\n"
            "maxsize 104857600\n"
            "index objectClass,uid,cn,member,memberUid eq\n"
            "access to attrs=userPassword\n"
            "  by anonymous auth\n  by self write\n  by * none\n"
            "access to *\n"
            f"  by dn.exact=\"{self.service_dn}\" read\n"
            "  by users read\n  by anonymous none\n"
        )

    def write(self) -> None:
        """Write the configuration and load the directory with `slapadd` (slapd not running)."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kdash-slapd-"))
            self._own_workdir = True
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        db = self.workdir / "db"
        if db.exists():
            shutil.rmtree(db)
        db.mkdir()
        if self.tls and not self.tls_files:
            self.tls_files = make_tls_files(self.workdir)
        (self.workdir / "slapd.conf").write_text(self._conf())
        (self.workdir / "data.ldif").write_text(self._ldif())
        subprocess.run(
            [SLAPADD, "-q", "-f", str(self.workdir / "slapd.conf"),
             "-l", str(self.workdir / "data.ldif")],
            check=True, capture_output=True,
        )

    def start(self, timeout: float = 10.0) -> SlapdServer:
        """Write the directory (first time) and start slapd; return when it accepts connections."""
        if self.workdir is None or not (Path(self.workdir) / "slapd.conf").exists():
            self.write()
        self.port = self.port or free_port()
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls_files:
            self.ldaps_port = self.ldaps_port or free_port()
            urls += f" ldaps://127.0.0.1:{self.ldaps_port}/"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(self.workdir / "slapd.conf"), "-h", urls, "-d", self.log_level],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.ldaps_port] if self.tls_files else [])
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            if all(_accepts(p) for p in ports):
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"slapd did not listen on 127.0.0.1:{self.port} in {timeout}s")

    def stop(self) -> None:
        """Stop slapd (the directory stays in `workdir`, so `start()` brings it back)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        terminate(proc, signal.SIGINT)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- changing the directory while it runs (tests of refresh) ------------------------------

    def _admin_conn(self):
        import ldap3

        return ldap3.Connection(ldap3.Server("127.0.0.1", port=self.port), self.admin_dn,
                                self.admin_password, auto_bind=True)

    def delete_user(self, uid: str) -> None:
        with self._admin_conn() as conn:
            conn.delete(self.user_dn(uid))

    def remove_from_group(self, uid: str, cn: str) -> None:
        import ldap3

        group = next(g for g in self.groups if g["cn"] == cn)
        attr, value = ("memberUid", uid) if group.get("kind") == "posix" else (
            "member", self.user_dn(uid))
        with self._admin_conn() as conn:
            conn.modify(f"cn={cn},{self.groups_dn}", {attr: [(ldap3.MODIFY_DELETE, [value])]})

    def operation_count(self) -> int:
        """LDAP operations logged so far (needs log_level "256", slapd's `stats`).

        slapd logs some operations on two lines (request, then details); each distinct
        (connection, operation) pair counts once.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return len(set(_OPERATION.findall(text)))


_OPERATION = re.compile(
    r"conn=(\d+) op=(\d+) (?:BIND|SRCH|EXT|MOD|MODRDN|ADD|DEL|CMP|UNBIND|ABANDON)\b")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


if __name__ == "__main__":  # pragma: no cover - manual use: python -m kdash_hub.dev.ldap
    s = SlapdServer(tls=True, log_level="256").start()
    print(s.url, s.ldaps_port, s.workdir, flush=True)
    try:
        signal.pause()
    finally:
        s.cleanup()
        os._exit(0)
