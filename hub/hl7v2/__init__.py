"""HL7 v2 on the wire: MLLP framing (bytes only), a fast ER7 reader and writer, ACKs.

Nothing here opens a socket; the MLLP connector and listener sit above it. This package
is on the hot path (socket → parse → store → ACK), so it never imports hl7apy.
"""
