"""Analysis of trained dictionaries: the evaluation protocol, interventions (editing and steering) and
the static dashboards."""
