"""The ground floor: facts every other package shares and nothing above may redefine.

The class list and score scale, digiKam's input contract (preprocess), image decoding, XMP pick labels,
the registry pattern, config location, the data-error type and the signal outcomes. Imports nothing
from iqs outside core.
"""
