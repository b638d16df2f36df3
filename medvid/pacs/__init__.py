"""The hospital loop: studies pulled from a PACS (DICOMweb or DIMSE) into an ordinary export folder."""
