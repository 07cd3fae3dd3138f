"""What every backend shares: the log book of replica output, the replica health probe, the spec label."""
