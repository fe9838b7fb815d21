//! The xbdev block-device core.
