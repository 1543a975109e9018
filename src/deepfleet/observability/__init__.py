"""Monitoring: Prometheus service discovery and config, alert rules, Grafana dashboards and the
`deepfleet top` sampler, all over the metric names in `names`."""
