pub mod vpcd;
