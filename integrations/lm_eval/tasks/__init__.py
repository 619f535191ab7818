"""Task YAMLs of the `sf_*` lm-eval tasks (a package only so wheels ship the YAML files)."""
