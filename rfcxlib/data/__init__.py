"""The RFCx data layout: tables, checks of a data folder, and the submission file."""
