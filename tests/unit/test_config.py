"""elemta.toml parsing: defaults, every problem reported with file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from elemta_smtp.config import (
    LETSENCRYPT_PRODUCTION,
    LETSENCRYPT_STAGING,
    ConfigError,
    config_path,
    dev_config,
    load_config,
    parse_config,
)
from elemta_smtp.schema import SCHEMA, mask_password
from elemta_smtp.units import Address


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "e.toml")
    return [str(p) for p in info.value.problems]


def test_empty_file_gives_documented_defaults() -> None:
    """An empty file is a valid config with the documented defaults."""
    config = parse_config("[server]\nhostname = \"mail.example.com\"\n")
    assert config.server.listen_addr == Address("", 25)
    assert config.server.pid_file == Path("/run/elemta/elemta.pid")
    assert config.server.max_connections == 1000
    assert config.server.idle_timeout == 300
    assert config.server.max_message_size == 25_000_000
    assert config.server.max_recipients == 100
    assert config.server.max_errors == 20
    assert config.delivery.local_domains == ("mail.example.com",)
    assert config.delivery.bare_newline == "normalize"
    assert config.tls.enabled and config.tls.enable_starttls
    assert config.tls.listen_addr == Address("", 465)
    assert config.tls.letsencrypt.domain == "mail.example.com"
    assert config.tls.letsencrypt.http_addr == Address("", 80)
    assert config.tls.renewal.check_interval == 12 * 3600
    assert config.tls.renewal.renewal_timeout == 300


def test_issue_example_parses() -> None:
    """The key names the project promises parse into typed values."""
    config = parse_config("""
[server]
hostname = "mail.example.com"
listen_addr = ":25"
pid_file = "/run/elemta/elemta.pid"
max_connections = 1000
idle_timeout = "5m"
max_message_size = 1048576
max_recipients = 50
max_errors = 20

[delivery]
local_domains = ["example.com", "Example.ORG."]
local_users = ["Alice", "bob"]
maildir_root = "/var/mail/elemta"
bare_newline = "reject"

[tls]
enabled = true
listen_addr = "[::1]:465"
enable_starttls = false
cert_file = "/etc/ssl/mail.pem"
key_file = "/etc/ssl/mail.key"

[tls.letsencrypt]
enabled = true
domain = "mail.example.com"
email = "admin@example.com"
cache_dir = "/var/lib/elemta"
staging = true
directory_url = ""
http_addr = ":80"

[tls.renewal]
auto_renew = true
renewal_days = 30
check_interval = "24h"
renewal_timeout = "90s"

[notify]
recipients = []
relay = "smtp.example.net:587"
""")
    assert config.server.max_message_size == 1_048_576
    assert config.delivery.local_domains == ("example.com", "example.org")
    assert config.delivery.local_users == ("alice", "bob")
    assert config.tls.listen_addr == Address("::1", 465)
    assert config.tls.cert_file == Path("/etc/ssl/mail.pem")
    assert config.tls.letsencrypt.acme_directory == LETSENCRYPT_STAGING
    assert config.tls.renewal.check_interval == 86400
    assert config.notify.recipients == ("admin@example.com",)


def test_acme_directory_choice() -> None:
    """directory_url overrides staging; production is the default."""
    base = "[tls.letsencrypt]\n"
    assert parse_config(base).tls.letsencrypt.acme_directory == LETSENCRYPT_PRODUCTION
    url = "https://127.0.0.1:14000/dir"
    text = f'{base}staging = true\ndirectory_url = "{url}"\n'
    assert parse_config(text).tls.letsencrypt.acme_directory == url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[server]\nhostnme = "a.b"\n',
         'e.toml:2: [server.hostnme] unknown key "hostnme"; did you mean "hostname"?'),
        ("[tls.renewal]\nrenewal_dys = 3\n", 'did you mean "renewal_days"?'),
        ("[sever]\n", 'e.toml:1: [sever] unknown section "sever"; did you mean "server"?'),
        ('[tls]\nletsencript = {enabled = true}\n', 'did you mean "letsencrypt"?'),
        ('[server]\nmax_connections = "lots"\n',
         "e.toml:2: [server.max_connections] expected a whole number"),
        ('[server]\nidle_timeout = 300\n', '[server.idle_timeout] expected a duration string such as "90s"'),
        ('[server]\nidle_timeout = "5 minutes"\n', "is not a duration"),
        ('[server]\nlisten_addr = "localhost:25"\n', "is not an IP address"),
        ('[server]\nmax_message_size = "25 parsecs"\n', "is not a size"),
        ('[delivery]\nbare_newline = "fix"\n', 'must be one of "normalize", "reject"'),
        ('[delivery]\nlocal_domains = "example.com"\n', "expected a list"),
        ('[delivery]\nlocal_domains = ["exa mple.com"]\n', "is not a domain name"),
        ("[tls]\nenabled = 1\n", "expected true or false"),
        ('[tls]\ncert_file = "/a.pem"\n', "set both cert_file and key_file"),
        ("[tls.letsencrypt]\nenabled = true\n", "[tls.letsencrypt.email] is required"),
        ('[tls.letsencrypt]\ndirectory_url = "acme.example"\n', "is not a URL"),
        ("[tls.renewal]\nrenewal_days = 0\n", "must be from 1 to 365"),
        ('[tls.renewal]\ncheck_interval = "1s"\n', "must be from 10s"),
        ('[notify]\nrelay = "smtp.example.net"\n', '"host:port"'),
        ('[server]\nlisten_addr = ""\n[tls]\nenabled = false\n', "no listener left"),
        ("[server\n", "not valid TOML"),
        ('[server]\nhostname = "a.b"\nhostname = "c.d"\n',
         'e.toml:3: [server.hostname] "hostname" is written twice in [server] (first on line 2): '
         "delete one; this one was not checked"),
        ("server = 3\n", "must be a table [server]"),
    ],
    ids=lambda v: v.split("\n")[1] if "\n" in v and v.split("\n")[1] else v[:30],
)
def test_bad_config_is_refused_with_a_clear_message(text: str, expected: str) -> None:
    """Each kind of mistake gives one message that names file, key, line and what is allowed."""
    found = problems_of(text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('[server]\nmax_connections = "1000"\n',
                 'expected a whole number from 1 to 1000000, got the string "1000": '
                 "write 1000 without quotes",
                 id="number-in-quotes"),
    pytest.param("[server]\nmax_connections = 10.0\n",
                 "got the number 10.0: write 10, without a decimal point", id="number-with-point"),
    pytest.param('[server]\nmax_connections = "lots"\n', 'got the string "lots": write a whole number',
                 id="words-for-a-number"),
    pytest.param("[server]\nmax_connections = true\n", "got true: write a whole number",
                 id="bool-for-number"),
    pytest.param('[tls]\nenabled = "true"\n', 'expected true or false, got the string "true": write true '
                 "without quotes", id="bool-in-quotes"),
    pytest.param("[tls]\nenabled = 1\n", "expected true or false, got the number 1: write true",
                 id="bool-as-1"),
    pytest.param("[server]\nidle_timeout = 300\n", 'got the number 300: write "300s" (seconds) in double '
                 "quotes", id="duration-as-number"),
    pytest.param('[server]\nidle_timeout = "5 minutes"\n', '"5 minutes" is not a duration',
                 id="duration-words"),
    pytest.param("[server]\nlisten_addr = 25\n", 'got the number 25: write ":25" (every interface) or '
                 '"127.0.0.1:25"', id="address-as-number"),
    pytest.param('[server]\nlisten_addr = "localhost:25"\n',
                 '"localhost:25": "localhost" is not an IP address', id="address-with-name"),
    pytest.param("[server]\nhostname = 25\n", 'expected a string, got the number 25: write it in double '
                 'quotes: "25"', id="number-for-string"),
    pytest.param('[server]\nhostname = ["a.example"]\n', 'expected a string, got the list ["a.example"]: '
                 "write one value in double quotes", id="list-for-string"),
    pytest.param('[server]\nmax_message_size = 25.5\n', "got the number 25.5: write a whole number of bytes",
                 id="size-with-point"),
    pytest.param('[server]\nmax_message_size = "25 parsecs"\n', '"25 parsecs" is not a size',
                 id="size-words"),
    pytest.param('[delivery]\nlocal_domains = "example.com"\n',
                 'expected a list such as ["a", "b"], got the string "example.com": write ["example.com"]',
                 id="string-for-list"),
    pytest.param('[delivery]\nlocal_domains = ["exa mple.com"]\n', '"exa mple.com" is not a domain name',
                 id="bad-list-item"),
    pytest.param('[delivery]\nbare_newline = "Reject"\n', 'got the string "Reject": write "reject"',
                 id="choice-case"),
    pytest.param("[delivery]\nbare_newline = 1\n", 'must be one of "normalize", "reject", got the number 1',
                 id="choice-number"),
    pytest.param('[tls.letsencrypt]\ndirectory_url = "acme.example"\n', '"acme.example" is not a URL',
                 id="url"),
    pytest.param("[tls.letsencrypt]\nenabled = 2030-01-01\n", "got the date 2030-01-01", id="date"),
    pytest.param("server = 3\n", "must be a table [server], got the number 3", id="table-as-number"),
])
def test_type_errors_name_the_value_as_written_in_toml(text: str, expected: str) -> None:
    """A wrong value is described the way the admin wrote it (string, number, true/false, list,
    table, date) with what to write instead, never as a Python repr."""
    (found,) = problems_of(text)
    assert expected in found
    assert "'" not in found.partition("] ")[2]  # no Python repr quotes


def test_repeated_key_is_reported_and_the_rest_still_checked() -> None:
    """A key written twice is one problem among the others: misspelled keys and wrong types in
    the same file are reported in the same run, with their lines."""
    found = problems_of('[server]\nhostname = "a.example"\nhostname = "b.example"\nhostnme = "c"\n'
                        'max_connections = "1000"\n[delivery]\nlocal_domains = [\n  "a.example",\n]\n'
                        'local_domains = [\n  "b.example",\n]\nbare_newline = "fix"\n')
    assert [p.split(":")[1] for p in found] == ["3", "4", "5", "10", "13"]
    assert "[server.hostname] \"hostname\" is written twice in [server] (first on line 2)" in found[0]
    assert "did you mean \"hostname\"" in found[1]
    assert 'got the string "1000": write 1000 without quotes' in found[2]
    assert "[delivery.local_domains] \"local_domains\" is written twice" in found[3]
    assert 'must be one of "normalize", "reject"' in found[4]


def test_repeated_table_is_reported_and_the_rest_still_checked() -> None:
    """A table header written twice is reported; keys elsewhere are still checked."""
    found = problems_of('[server]\nmax_errors = 5\n[tls]\nenabled = "yes"\n[server]\nmax_errors = 0\n')
    assert [p.split(":")[1] for p in found] == ["4", "5"]
    assert "table [server] is written twice (first on line 1): merge the two" in found[1]


def test_syntax_error_names_its_line_and_column() -> None:
    """Broken TOML (not a repetition) is one problem with its line and column; nothing is guessed."""
    (found,) = problems_of('[server]\nmax_errors = 5\nhostname = "a.example\n')
    assert found.startswith("e.toml:3: not valid TOML: ")
    assert "(column" in found and "at line" not in found


def test_every_problem_is_reported_at_once() -> None:
    """Several mistakes are all reported together, each on its own line."""
    found = problems_of('[server]\nmax_errors = 0\nmax_recipients = "x"\n[delivery]\nbare_newline = 1\n')
    assert [p.split(":")[1] for p in found] == ["2", "3", "5"]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """Relative paths in a config file resolve against the file's folder, not the cwd."""
    path = tmp_path / "elemta.toml"
    path.write_text('[delivery]\nmaildir_root = "mail"\n[tls.letsencrypt]\ncache_dir = "c"\n')
    config = load_config(path)
    assert config.delivery.maildir_root == tmp_path / "mail"
    assert config.tls.letsencrypt.cache_dir == tmp_path / "c"
    assert config.path == path


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing config file says how to point elemta at one."""
    with pytest.raises(ConfigError, match="ELEMTA_CONFIG"):
        load_config(tmp_path / "nope.toml")


def test_config_path_precedence() -> None:
    """-c wins over $ELEMTA_CONFIG, which wins over /etc/elemta/elemta.toml."""
    assert config_path("a.toml", {"ELEMTA_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path(None, {"ELEMTA_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path(None, {}) == Path("/etc/elemta/elemta.toml")


def test_dev_config_is_self_contained(tmp_path: Path) -> None:
    """The embedded default listens on loopback only and keeps every file under its data dir."""
    config = dev_config(tmp_path)
    assert config.server.listen_addr == Address("127.0.0.1", 2525)
    assert config.tls.listen_addr == Address("127.0.0.1", 4465)
    assert config.tls.letsencrypt.http_addr is not None
    assert config.tls.letsencrypt.http_addr.host == "127.0.0.1"
    assert not config.tls.letsencrypt.enabled
    for path in (config.server.pid_file, config.delivery.maildir_root, config.tls.letsencrypt.cache_dir):
        assert path.is_relative_to(tmp_path)


def test_example_config_documents_every_key() -> None:
    """packaging/elemta.toml parses and mentions every key of the schema."""
    example = Path(__file__).parents[2] / "packaging" / "elemta.toml"
    text = example.read_text()
    parse_config(text, str(example))
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text, section
        for key in keys:
            assert f"{key} =" in text, f"{section}.{key}"


def test_a_relative_config_path_is_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config.path is absolute (certbot stores it for renewals) while messages name the path as given."""
    monkeypatch.chdir(tmp_path)
    Path("elemta.toml").write_text("[server]\nmax_errors = 3\n")
    assert load_config(Path("elemta.toml")).path == tmp_path / "elemta.toml"
    Path("elemta.toml").write_text("[server]\nmax_errors = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(Path("elemta.toml"))
    assert str(info.value).startswith("elemta.toml:2: [server.max_errors]")


def test_metrics_listener_is_off_by_default_and_takes_an_address() -> None:
    """[metrics] listen_addr: "" (default) is off; "host:port" is where /metrics listens."""
    assert parse_config("").metrics.listen_addr is None
    config = parse_config('[metrics]\nlisten_addr = "127.0.0.1:9465"\n')
    assert config.metrics.listen_addr == Address("127.0.0.1", 9465)


def test_metrics_listener_with_a_bad_address_says_which_key() -> None:
    """A listen_addr that is not host:port is an error naming [metrics] listen_addr and its line."""
    [problem] = problems_of('[metrics]\nlisten_addr = "localhost"\n')
    assert "metrics.listen_addr" in problem and "e.toml:2" in problem
# --- [cluster] ---

def test_cluster_defaults_to_a_single_host() -> None:
    """Without [cluster] elemta runs alone: no Redis, a 60 s lease, a 30 s periodic check."""
    cluster = parse_config("").cluster
    assert not cluster.enabled
    assert (cluster.redis_url, cluster.key_prefix, cluster.node_name) == ("", "elemta:", "")
    assert (cluster.lock_lease, cluster.sync_interval) == (60.0, 30.0)


def test_cluster_keys_are_read(tmp_path: Path) -> None:
    """The Redis URL (redis:// or rediss://), a password file relative to the config file,
    the prefix, the node name and the durations are read as written."""
    text = ('[cluster]\nredis_url = "rediss://redis.internal:6380/2"\n'
            'password_file = "redis.pass"\nkey_prefix = "mx:"\nnode_name = "mx1"\n'
            'lock_lease = "2m"\nsync_interval = "10s"\n')
    cluster = parse_config(text, str(tmp_path / "elemta.toml"), tmp_path).cluster
    assert cluster.enabled and cluster.redis_url == "rediss://redis.internal:6380/2"
    assert cluster.password_file == tmp_path / "redis.pass"
    assert (cluster.key_prefix, cluster.node_name) == ("mx:", "mx1")
    assert (cluster.lock_lease, cluster.sync_interval) == (120.0, 10.0)


@pytest.mark.parametrize(("text", "expected"), [
    ('redis_url = "http://:hunter2@redis:6379"', "is not a Redis URL"),
    ('redis_url = "redis://"', "is not a Redis URL"),
    ('redis_url = "redis://:hunter2@redis:6379/0"\npassword_file = "/etc/pw"',
     "the password is given twice"),
    ('key_prefix = ""', "is not a key prefix"),
    ('node_name = "mx 1"', "is not a node name"),
    ('lock_lease = "1s"', "must be from 5s"),
])
def test_cluster_bad_values_are_refused_without_showing_a_password(text: str,
                                                                   expected: str) -> None:
    """Each bad [cluster] value gets one problem saying what to write; a password in a bad
    URL is shown as ***."""
    [problem] = problems_of(f"[cluster]\n{text}\n")
    assert expected in problem
    assert "hunter2" not in problem


def test_mask_password_hides_only_the_password() -> None:
    """Every Redis URL elemta shows has its password replaced by ***, user and host kept."""
    assert mask_password("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_password("rediss://elemta:s3cret@h:6380/0") == "rediss://elemta:***@h:6380/0"
    assert mask_password("redis://h:6379/0") == "redis://h:6379/0"


# --- listeners that would take each other's port ---

@pytest.mark.parametrize(("text", "key", "other"), [
    ('[server]\nlisten_addr = "127.0.0.1:2525"\n[tls]\nlisten_addr = "127.0.0.1:2525"\n',
     "tls.listen_addr", "[server] listen_addr"),
    ('[server]\nlisten_addr = "127.0.0.1:2525"\n[metrics]\nlisten_addr = "127.0.0.1:2525"\n',
     "metrics.listen_addr", "[server] listen_addr"),
    ('[metrics]\nlisten_addr = "[::1]:80"\n', "metrics.listen_addr",
     "[tls.letsencrypt] http_addr"),  # the default ":80" is every address, IPv6 too
    ('[tls.letsencrypt]\nchallenge = "tls-alpn-01"\nhttps_addr = ":465"\n',
     "tls.letsencrypt.https_addr", "[tls] listen_addr"),
])
def test_two_listeners_on_one_port_are_refused(text: str, key: str, other: str) -> None:
    """Two of elemta's own listeners on colliding addresses: one problem on the later key,
    naming the earlier one (not "in use by another program" when the daemon starts)."""
    [problem] = problems_of(text)
    assert f"[{key}]" in problem and f"takes the port of {other}" in problem


@pytest.mark.parametrize("text", [
    '[server]\nlisten_addr = "0.0.0.0:2525"\n[metrics]\nlisten_addr = "[::1]:2525"\n',
    '[server]\nlisten_addr = "127.0.0.1:2525"\n[metrics]\nlisten_addr = "127.0.0.2:2525"\n',
    '[tls]\nenabled = false\nlisten_addr = ":2525"\n[server]\nlisten_addr = ":2525"\n',
    '[tls.letsencrypt]\nhttps_addr = ":465"\n',  # no TLS-ALPN-01 or MTA-STS: not bound
])
def test_listeners_that_do_not_collide_are_accepted(text: str) -> None:
    """Other IPs of one family, an IPv4 wildcard beside an IPv6 address, and listeners that
    are not bound (TLS off, HTTPS unused) are no clash."""
    parse_config(text, "e.toml")  # no ConfigError
