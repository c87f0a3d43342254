"""Pure pricing: effective-dated price books, charge models, rating and explanations.

No I/O, no wall clock, no float (DESIGN §5, §6). The invoicing layer feeds it
segments and quantities and gets back exact and rounded amounts with an
explanation of every number.
"""
