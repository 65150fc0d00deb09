"""Generated from protos/gearshift/v1 by gearshift.dev.protogen; do not edit."""
