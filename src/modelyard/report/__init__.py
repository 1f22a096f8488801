"""Human-facing output: terminal tables now; plots and the HTML report later."""
