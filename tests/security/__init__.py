"""The adversarial suite: every attack found against the pack, replayed end to end."""
