"""Support every layer uses: the errors a user can act on, atomic writes, the checks and the schema of
single settings, the compute device, CPU threads, and the time left in a run."""
