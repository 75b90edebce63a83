import XCTest
@testable import LockstepData

final class CSVTests: XCTestCase {
    func testClassificationWithHeaderAndNamedLabel() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("iris.csv", Array("a, label ,b\n1.5,2,-3\n\n0,0,4e-1\r\n7,1,8\n".utf8))
        let dataset = try CSVReader.load(path: path, labelColumn: CSVColumn("label"), hasHeader: true)
        XCTAssertEqual(dataset.count, 3)
        XCTAssertEqual(dataset.sampleShape, [2])
        XCTAssertEqual(dataset.features, [1.5, -3, 0, 0.4, 7, 8])
        XCTAssertEqual(dataset.targets, [2, 0, 1])
        XCTAssertEqual(dataset.classCount, 3)
    }

    func testRegressionWithoutHeaderLastColumn() throws {
        let dataset = try CSVReader.parse("1,2,0.25\n3,4,-1.5\n", file: "r.csv", labelColumn: CSVColumn("-1"),
                                          hasHeader: false, task: .regression)
        XCTAssertEqual(dataset.features, [1, 2, 3, 4])
        XCTAssertEqual(dataset.targets, [0.25, -1.5])
        XCTAssertNil(dataset.classCount)
    }

    func testLabelByIndexAndGivenClassCount() throws {
        let dataset = try CSVReader.parse("1,5,6\n0,7,8\n", file: "c.csv", labelColumn: .index(0), hasHeader: false, classCount: 4)
        XCTAssertEqual(dataset.features, [5, 6, 7, 8])
        XCTAssertEqual(dataset.targets, [1, 0])
        XCTAssertEqual(dataset.classCount, 4)
    }

    func testErrorsNameFileLineAndColumn() {
        assertDataError(try CSVReader.parse("x,y\n1,2\n3,abc\n", file: "data.csv", labelColumn: .name("y")),
                        names: "data.csv", mentions: "line 3, column 2 ('y'): 'abc'")
        assertDataError(try CSVReader.parse("1,2\n3\n", file: "data.csv", hasHeader: false),
                        names: "data.csv", mentions: "line 2: has 1 columns, expected 2")
        assertDataError(try CSVReader.parse("1,2.5\n", file: "data.csv", hasHeader: false),
                        names: "data.csv", mentions: "line 1, column 2: label '2.5' is not a non-negative integer")
        assertDataError(try CSVReader.parse("1,2\n1,5\n", file: "data.csv", hasHeader: false, classCount: 3),
                        names: "data.csv", mentions: "line 2, column 2: label 5 is out of range 0..<3")
        assertDataError(try CSVReader.parse("a,b\n1,2\n", file: "data.csv", labelColumn: .name("c")),
                        names: "data.csv", mentions: "no column named 'c'")
        assertDataError(try CSVReader.parse("1,2\n", file: "data.csv", labelColumn: .index(5), hasHeader: false),
                        names: "data.csv", mentions: "label column 5 does not exist")
        assertDataError(try CSVReader.parse("a,b\n", file: "data.csv"), names: "data.csv", mentions: "no data rows")
        assertDataError(try CSVReader.load(path: "/nonexistent/x.csv"), names: "/nonexistent/x.csv", mentions: "missing")
    }
}
