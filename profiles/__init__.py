"""Our FHIR StructureDefinitions (``fhir/``) and HL7 v2 message profiles (``hl7v2/``).

Data only; a package so that installing the hub installs them beside ``hub``, where
``hub validate`` looks (hub/validate.py).
"""
