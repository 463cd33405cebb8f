"""Qt views: panels, plots and the token view. They draw what the controller hands them."""
