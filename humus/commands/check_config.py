"""`humus check-config FILE`: validate a gateway or observatory configuration, or a sites file."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a configuration file and exit (status 2 if invalid)",
                       description="Validate a gateway (has [gateway]) or observatory (has [ingest] and/or "
                                   "[alerts]) configuration. Prints one line; exit status 0 if valid, 2 if not.")
    p.add_argument("file", help="TOML configuration file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from humus.config import ConfigError, read_toml

    data = read_toml(args.file)
    if "gateway" in data:
        from collector.config import load_gateway_config

        cfg = load_gateway_config(args.file)
        print(f"{args.file}: ok, gateway {cfg.gateway.site}/{cfg.gateway.id} with {len(cfg.probes)} probe(s)")
    elif "ingest" in data:
        from observatory.config import load_observatory_config

        ocfg = load_observatory_config(args.file)
        print(f"{args.file}: ok, ingest into {ocfg.ingest.store.split(':', 1)[0]} store")
    if "alerts" in data:
        from observatory.alerts.config import load_alerts_config

        acfg = load_alerts_config(args.file)
        print(f"{args.file}: ok, alerts on the {acfg.store.split(':', 1)[0]} store, notifying via "
              + ("Alertmanager" if acfg.alerts.alertmanager.url else "the built-in notifier"))
    elif "sites" in data:
        from observatory.sites import load_sites

        sites = load_sites(args.file)
        print(f"{args.file}: ok, {len(sites)} site(s): "
              + ", ".join(f"{s.id} ({len(s.layers)} layers)" for s in sites.values()))
    elif "gateway" not in data and "ingest" not in data:
        raise ConfigError(args.file, "", "a [gateway] table (collector), an [ingest] or [alerts] table "
                                         "(observatory), or [sites] (site descriptions)")
    return 0
