import XCTest
final class NNDaemonTestsPlaceholder: XCTestCase { func testNothing() {} }
