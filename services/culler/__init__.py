"""kdash-culler: idle and age rules that know a GPU from a CPU."""
