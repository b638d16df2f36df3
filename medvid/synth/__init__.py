"""medvid.synth."""
