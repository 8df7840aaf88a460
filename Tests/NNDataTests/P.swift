import XCTest
final class NNDataTestsPlaceholder: XCTestCase { func testNothing() {} }
