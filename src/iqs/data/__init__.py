"""Data layer: real dataset formats -> SampleTable -> Mixture."""
