"""medvid.models."""
