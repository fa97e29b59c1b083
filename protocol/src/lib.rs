//! OTLP wire format.
