package fanout

// HTTPStatus lets the tests in package fanout_test check httpStatus.
var HTTPStatus = httpStatus
